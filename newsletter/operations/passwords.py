"""Whether a password is good enough for a console account: long, not a common password, and
not predictable (judged like the signing key, :func:`newsletter.config.key_strength_bits`).

A reviewer once set a shared admin password of `1234` without a word from `doctor` and sent
800 guesses in 2 seconds; a console password is now checked when it is set
(:func:`newsletter.operations.accounts.set_password`), and sign-in is throttled per client and per
account (``web/console/signin.py``). The list holds the most used passwords of public breach lists.
"""

from __future__ import annotations

from newsletter.config import key_strength_bits

MIN_LENGTH = 12
MIN_BITS = 50

COMMON = frozenset(
    """
    123456 password 12345678 qwerty 123456789 12345 1234 111111 1234567 dragon 123123 baseball
    abc123 football monkey letmein shadow master 666666 qwertyuiop 123321 mustang 1234567890
    michael 654321 superman 1qaz2wsx 7777777 121212 000000 qazwsx 123qwe killer trustno1 jordan
    jennifer zxcvbnm asdfgh hunter buster soccer harley batman andrew tigger sunshine iloveyou
    charlie robert thomas hockey ranger daniel starwars 112233 george computer michelle jessica
    pepper zxcvbn 555555 11111111 131313 freedom 777777 pass maggie 159753 aaaaaa ginger
    princess joshua cheese amanda summer love ashley nicole chelsea biteme matthew access
    yankees 987654321 dallas austin thunder taylor matrix admin administrator welcome passw0rd
    password1 password123 changeme change-me letmein123 qwerty123 adminadmin admin123 admin1234
    administrator1 welcome123 iloveyou123 passwordpassword qwertyuiopasdf 123456789012
    """.split()
)


def weakness(password: str) -> str | None:
    """Why ``password`` is too weak for a console account, or None when it is fine."""
    if len(password) < MIN_LENGTH:
        return f"shorter than {MIN_LENGTH} characters"
    if password.lower() in COMMON or password.lower().rstrip("0123456789!") in COMMON:
        return "one of the most common passwords"
    if key_strength_bits(password) < MIN_BITS:
        return "too predictable (repeated or sequential characters)"
    return None
