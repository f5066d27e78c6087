"""DKIM signatures (RFC 6376) for the messages the engine sends itself, with RSA-SHA256 and
Ed25519-SHA256 (RFC 8463) keys, one or both (dual signing: receivers that know Ed25519 use it,
the others the RSA signature).

Relaxed/relaxed canonicalization, so a relay that refolds a header or trims a line end does
not break the signature. The signed headers are the ones a receiver shows or acts on:
From, To, Subject, Date, Message-ID, Reply-To, the MIME headers, List-Id, Feedback-ID and
both List-Unsubscribe headers. RFC 8058 requires List-Unsubscribe and List-Unsubscribe-Post
to be covered by a valid DKIM signature for one-click unsubscribe, and common signers'
default lists leave List-Unsubscribe-Post out. From, Subject and both List-Unsubscribe headers
are *oversigned* (named once more than they occur), so a header added on the way invalidates
the signature instead of standing beside the signed one.

The signing is done here with the ``cryptography`` primitives (OpenSSL), not with dkimpy,
whose RSA is pure Python; the tests verify every signature with dkimpy, an independent
implementation, against the published key. Pure: ``now`` is a parameter (the ``t=`` tag).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter.errors import NewsletterError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

# ``cryptography`` is imported where a key is loaded, made or used, not here: this module is
# imported by every process that builds a message (for the canonicalization helpers), and
# OpenSSL's bindings are 9.5 MiB of each of them when no key is configured.

#: The headers signed, in this order, when the message has them.
SIGNED_HEADERS = (
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "reply-to",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "list-id",
    "list-unsubscribe",
    "list-unsubscribe-post",
    "feedback-id",
)
#: Named once more than they occur: a copy added after signing breaks the signature.
OVERSIGNED = frozenset({"from", "subject", "list-unsubscribe", "list-unsubscribe-post"})
#: Smallest RSA key accepted (RFC 8301: signers MUST use at least 1024 bits, SHOULD 2048).
MIN_RSA_BITS = 2048
_WSP = re.compile(rb"[ \t]+")
#: Only the runs that change (a tab, or two or more): far fewer matches in indented HTML.
_RUNS = re.compile(rb"\t[ \t]*| [ \t]+")
_CRLF = b"\r\n"
SELECTOR = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")


class DkimError(NewsletterError, ValueError):
    """A key that can't sign (unreadable, the wrong kind, too short); names the file."""


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One signing key: ``selector`` names its TXT record at
    ``<selector>._domainkey.<domain>``."""

    domain: str
    selector: str
    private_key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey

    @property
    def algorithm(self) -> str:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        return (
            "ed25519-sha256"
            if isinstance(self.private_key, ed25519.Ed25519PrivateKey)
            else ("rsa-sha256")
        )

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ed25519, padding

        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            # RFC 8463: PureEdDSA over the SHA-256 hash of the canonicalized data.
            return self.private_key.sign(hashlib.sha256(data).digest())
        return self.private_key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def load_key(path: Path, *, domain: str, selector: str) -> DkimKey:
    """The PEM private key at ``path`` (RSA of at least 2048 bits, or Ed25519)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise DkimError(f"{path}: can't read the DKIM key: {exc.strerror or exc}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise DkimError(f"{path}: not an unencrypted PEM private key") from None
    if isinstance(loaded, rsa.RSAPrivateKey):
        if loaded.key_size < MIN_RSA_BITS:
            raise DkimError(
                f"{path}: an RSA key of {loaded.key_size} bits; at least {MIN_RSA_BITS}"
            )
        return DkimKey(domain, selector, loaded)
    if isinstance(loaded, ed25519.Ed25519PrivateKey):
        return DkimKey(domain, selector, loaded)
    raise DkimError(f"{path}: an RSA or Ed25519 key is needed, not {type(loaded).__name__}")


def generate(kind: str) -> tuple[bytes, str]:
    """A new private key (PEM) of ``kind`` ("rsa" for RSA-2048, or "ed25519") and the TXT
    record value that publishes its public half."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=MIN_RSA_BITS)
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise DkimError(f"key type: {kind!r} is not one of rsa, ed25519")
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, txt_record(DkimKey("", "", key))


def txt_record(key: DkimKey) -> str:
    """``v=DKIM1; k=...; p=...``: what to publish at ``<selector>._domainkey.<domain>``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = key.private_key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}"
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode()}"


def relaxed_body(body: bytes) -> bytes:
    """RFC 6376 3.4.4: runs of spaces and tabs become one space, none at a line's end, no
    empty lines at the end, and a non-empty body ends with CRLF."""
    body = _WSP.sub(b" ", body).replace(b" \r\n", _CRLF).rstrip(b" \r\n")
    return body + _CRLF if body else b""


def relaxed_run(piece: bytes) -> bytes:
    """A part of a body canonicalized inside its lines only (runs of spaces and tabs as one
    space, none before a CRLF), its ends left alone: the pieces of a template are done once
    per edition and joined per recipient (:func:`relaxed_join`)."""
    return _RUNS.sub(b" ", piece).replace(b" \r\n", _CRLF)


def relaxed_join(pieces: Sequence[bytes]) -> bytes | None:
    """The relaxed body from pieces each done by :func:`relaxed_run`; None when a run of
    spaces or a line end straddles two pieces (then canonicalize the whole body)."""
    kept = [p for p in pieces if p]
    for before, after in pairwise(kept):
        if before[-1:] in (b" ", b"\t") and after[:1] in (b" ", b"\t", b"\r"):
            return None
        if before.endswith(b" \r") and after.startswith(b"\n"):
            return None
    body = b"".join(kept).rstrip(b" \r\n")
    return body + _CRLF if body else b""


def relaxed_header(name: bytes, value: bytes) -> bytes:
    """RFC 6376 3.4.2: the name lower-cased, the value unfolded, runs of spaces and tabs as
    one space, none around the colon or at the end."""
    unfolded = value.replace(_CRLF, b"")
    return name.strip().lower() + b":" + _WSP.sub(b" ", unfolded).strip(b" \t")


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """The header block as (name, raw value with its folding) pairs, in order."""
    fields: list[tuple[bytes, bytes]] = []
    for line in head.split(_CRLF):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + _CRLF + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name, value))
    return fields


def _fold(tags: list[str], tail: str) -> str:
    """The tags joined by "; ", broken onto lines of about 76 characters at the spaces
    between tags (the ``h=`` list also at its colons, the base64 values anywhere)."""
    lines = ["DKIM-Signature:"]
    for tag in tags:
        piece = " " + tag + ";"
        if len(lines[-1]) + len(piece) <= 76:
            lines[-1] += piece
            continue
        for chunk in _chunks(piece):
            if len(lines[-1]) + len(chunk) > 76:
                lines.append("\t" + chunk.lstrip())
            else:
                lines[-1] += chunk
    return "\r\n".join(lines) + "\r\n\t" + tail


def _chunks(piece: str) -> list[str]:
    if piece.startswith(" h="):
        names = piece.split(":")
        return [names[0]] + [":" + n for n in names[1:]]
    return [piece[i : i + 64] for i in range(0, len(piece), 64)]


class DkimSigner:
    """Signs whole messages (CRLF line ends, as :class:`OutgoingMessage` carries them) with
    each of its keys; a message gets one DKIM-Signature per key, prepended."""

    def __init__(self, keys: Sequence[DkimKey]) -> None:
        if not keys:
            raise DkimError("at least one DKIM key is needed")
        self.keys = tuple(keys)

    def sign(self, data: bytes, *, now: int, canonical_body: bytes | None = None) -> bytes:
        """``data`` with a DKIM-Signature per key in front; ``canonical_body``, when the
        caller has it already (:func:`relaxed_join`), saves canonicalizing the body."""
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            raise DkimError("not a message: no blank line between the headers and the body")
        fields = _fields(head)
        if canonical_body is None:
            canonical_body = relaxed_body(body)
        body_hash = base64.b64encode(hashlib.sha256(canonical_body).digest()).decode()
        names, signed = self._signed(fields)
        out = []
        for key in self.keys:
            tags = [
                "v=1",
                f"a={key.algorithm}",
                "c=relaxed/relaxed",
                f"d={key.domain}",
                f"s={key.selector}",
                f"t={now}",
                f"h={':'.join(names)}",
                f"bh={body_hash}",
            ]
            header = _fold(tags, "b=")
            name, _, value = header.partition(":")
            canonical = signed + relaxed_header(name.encode(), value.encode())
            signature = base64.b64encode(key.sign(canonical)).decode()
            folded = "\r\n\t".join(signature[i : i + 72] for i in range(0, len(signature), 72))
            out.append(header.encode() + folded.encode() + _CRLF)
        return b"".join(out) + data

    @staticmethod
    def _signed(fields: list[tuple[bytes, bytes]]) -> tuple[list[str], bytes]:
        """The ``h=`` list and the canonical form of the headers it names: each instance of
        a header from the last up (RFC 6376 5.4.2), oversigned ones named once more."""
        by_name: dict[str, list[tuple[bytes, bytes]]] = {}
        for name, value in fields:
            by_name.setdefault(name.strip().lower().decode("ascii", "replace"), []).append(
                (name, value)
            )
        names: list[str] = []
        parts: list[bytes] = []
        for wanted in SIGNED_HEADERS:
            found = by_name.get(wanted, [])
            for name, value in reversed(found):
                names.append(wanted)
                parts.append(relaxed_header(name, value) + _CRLF)
            if wanted in OVERSIGNED:
                names.append(wanted)  # no instance left: signs the null string
        return names, b"".join(parts)


def signer_from(spec: str, *, domain: str) -> DkimSigner | None:
    """The signer ``NEWSLETTER_DKIM_KEYS`` describes ("selector:/path/key.pem", comma-
    separated), for ``domain``; None when it is empty. Raises :class:`DkimError` naming the
    entry that can't be used."""
    keys = []
    for entry in (e.strip() for e in spec.split(",")):
        if not entry:
            continue
        selector, sep, path = entry.partition(":")
        if not sep or not SELECTOR.fullmatch(selector.strip()) or not path.strip():
            raise DkimError(
                f"NEWSLETTER_DKIM_KEYS: {entry!r} is not selector:/path/to/key.pem "
                "(a selector is letters, digits, dots and hyphens)"
            )
        keys.append(load_key(Path(path.strip()), domain=domain, selector=selector.strip()))
    return DkimSigner(keys) if keys else None
