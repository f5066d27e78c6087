"""A private Dovecot (IMAP, IMAPS, POP3, POP3S) for tests, started and stopped by the tests.

Nothing system-wide is used or needed: the configuration, runtime sockets, state, log, TLS
certificate and mail all live in one temporary directory, and the listeners are on free ports
of 127.0.0.1. Only the ``dovecot`` binary is required (Debian: ``apt-get install dovecot-imapd
dovecot-pop3d``; ``.ci/run`` installs them); when it is missing the fixture fails loudly
instead of skipping, as the PostgreSQL fixture does.

Use it from any test file by importing the fixture functions (pytest finds fixtures in the
test module's namespace; they are registered under the names ``dovecot`` and ``mail_server``,
so test parameters don't shadow the imports)::

    from tests.mailserver import MailServer, dovecot_fixture, mail_server_fixture  # noqa: F401

    def test_something(mail_server: MailServer) -> None: ...

``dovecot`` is module-scoped (one server per test file; starting takes well under a second);
``mail_server`` is the same server with both test users' INBOX emptied before the test.
:func:`running_dovecot` is the same as a context manager, for use outside pytest.

Decisions worth knowing when running it elsewhere:

* Run as root (CI, the dev container), Dovecot's own ``dovecot``/``dovenull`` users run the
  internal and login processes and the mail belongs to ``nobody``: Dovecot refuses uid 0 for
  mail access. Run as another user, everything runs as that user (a "rootless" Dovecot:
  no chroot, mail owned by the current uid).
* The temporary directory is made with :func:`tempfile.mkdtemp` (mode 0711), not pytest's
  ``tmp_path``: pytest's base directory is 0700 root-only, which the mail user can't traverse.
* ``ssl = yes`` with a self-signed certificate for 127.0.0.1 and ``localhost`` (generated with
  ``cryptography``, written to ``cafile``), so imaps/pop3s/STARTTLS are verified for real with
  ``?cafile=``; plaintext logins are allowed too (``disable_plaintext_auth = no``) because
  everything listens on 127.0.0.1 only.
* Users come from a passwd-file (``{SHA256}`` hashes, so the password can hold ``:``):
  ``bounces`` with a password full of URL-special characters, and ``legacy``, whose IMAP
  session advertises no UIDPLUS after login (a userdb ``imap_capability`` override).
* Wrong logins are answered quickly: ``auth_failure_delay = 0`` and no ``anvil-auth-penalty``
  socket (without it Dovecot's auth process turns the per-IP penalty of up to 15 s off).
"""

from __future__ import annotations

import grp
import hashlib
import imaplib
import ipaddress
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from base64 import b64encode
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import pytest

#: The test user, and a password with every character a URL must percent-encode.
USER = "bounces"
PASSWORD = "s3cret:p@ss/w?rd#%"
#: A second user whose IMAP server says no UIDPLUS after login (the plain EXPUNGE path).
LEGACY_USER = "legacy"
DOVECOT_CANDIDATES = ("/usr/sbin/dovecot", "/usr/local/sbin/dovecot")


@dataclass
class MailServer:
    """A running private Dovecot: where it listens, who can log in, how to trust its cert."""

    host: str
    imap_port: int
    imaps_port: int
    pop3_port: int
    pop3s_port: int
    user: str
    password: str = field(repr=False)
    cafile: str
    root: Path
    log: Path
    legacy_user: str = LEGACY_USER

    def port(self, scheme: str) -> int:
        return {
            "imap": self.imap_port,
            "imaps": self.imaps_port,
            "pop3": self.pop3_port,
            "pop3s": self.pop3s_port,
        }[scheme]

    def url(
        self,
        scheme: str,
        *,
        starttls: bool = False,
        folder: str | None = None,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
    ) -> str:
        """A mailbox URL for this server (user and password percent-encoded; TLS schemes and
        STARTTLS get ``?cafile=`` so the self-signed certificate is verified)."""
        who = quote(user or self.user, safe="")
        secret = quote(self.password if password is None else password, safe="")
        path = f"/{quote(folder, safe='')}" if folder else ""
        options = []
        if starttls:
            options.append("starttls=1")
        if starttls or scheme.endswith("s"):
            options.append(f"cafile={quote(self.cafile)}")
        query = f"?{'&'.join(options)}" if options else ""
        return f"{scheme}://{who}:{secret}@{self.host}:{port or self.port(scheme)}{path}{query}"

    @contextmanager
    def imap(self, user: str | None = None) -> Iterator[imaplib.IMAP4]:
        """A logged-in plain IMAP connection (the tests' own view of the mailbox)."""
        conn = imaplib.IMAP4(self.host, self.imap_port, timeout=10)
        secret = f"\0{user or self.user}\0{self.password}".encode()
        conn.authenticate("PLAIN", lambda _: secret)
        try:
            yield conn
        finally:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error):
                conn.shutdown()

    def append(self, *messages: bytes, folder: str = "INBOX", user: str | None = None) -> None:
        """Put raw messages in a folder (IMAP APPEND, in this order: oldest first)."""
        with self.imap(user) as conn:
            for raw in messages:
                typ, data = conn.append(_quoted(folder), None, None, raw)
                assert typ == "OK", data

    def messages(self, folder: str = "INBOX", user: str | None = None) -> list[bytes]:
        """The raw messages still in a folder, oldest first, including those flagged
        \\Deleted but not expunged (reading doesn't mark them seen)."""
        return [raw for _, raw, _ in self._listing(folder, user)]

    def flags(self, folder: str = "INBOX", user: str | None = None) -> list[set[str]]:
        """Each message's flags, oldest first (\\Deleted ones included)."""
        return [flags for _, _, flags in self._listing(folder, user)]

    def create_folder(self, name: str, user: str | None = None) -> None:
        """Create a folder; ``name`` is the IMAP wire name (modified UTF-7, RFC 3501 5.1.3)."""
        with self.imap(user) as conn:
            typ, data = conn.create(_quoted(name))
            assert typ == "OK", data

    def mark_deleted(
        self,
        *raws: bytes,
        folder: str = "INBOX",
        user: str | None = None,
        expunge: bool = False,
    ) -> None:
        """Flag the messages with these exact bytes \\Deleted (and expunge them): what another
        poller, or a poll that stopped halfway, leaves behind."""
        with self.imap(user) as conn:
            conn.select(_quoted(folder))
            for uid, raw, _ in self._listing(folder, user, conn):
                if raw in raws:
                    typ, data = conn.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)")
                    assert typ == "OK", data
            if expunge:
                conn.expunge()

    def clear(self, folder: str = "INBOX", user: str | None = None) -> None:
        """Delete every message in a folder."""
        with self.imap(user) as conn:
            conn.select(_quoted(folder))
            if self._listing(folder, user, conn):
                conn.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
            conn.expunge()

    def _listing(
        self, folder: str, user: str | None, conn: imaplib.IMAP4 | None = None
    ) -> list[tuple[int, bytes, set[str]]]:
        """(uid, raw bytes, flags) of every message, oldest first, fetched with BODY.PEEK."""
        if conn is None:
            with self.imap(user) as own:
                own.select(_quoted(folder), readonly=True)
                return self._listing(folder, user, own)
        typ, data = conn.uid("SEARCH", "ALL")
        assert typ == "OK", data
        found = []
        for uid in sorted(int(u) for u in data[0].split()):
            typ, parts = conn.uid("FETCH", str(uid), "(FLAGS BODY.PEEK[])")
            assert typ == "OK", parts
            for part in parts:
                if isinstance(part, tuple):
                    flags = re.search(rb"FLAGS \(([^)]*)\)", part[0])
                    names = set(flags.group(1).decode().split()) if flags else set()
                    found.append((uid, bytes(part[1]), names))
        return found


def _quoted(folder: str) -> str:
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --- starting and stopping ------------------------------------------------------------------


def dovecot_binary() -> str:
    """The dovecot executable, or a test failure that says how to install it."""
    found = shutil.which("dovecot") or next(
        (p for p in DOVECOT_CANDIDATES if os.access(p, os.X_OK)), None
    )
    if not found:
        pytest.fail(
            "dovecot is not installed: the mailbox tests run a private Dovecot "
            "(apt-get install dovecot-imapd dovecot-pop3d; .ci/run does this)"
        )
    return found


def _free_ports(n: int) -> list[int]:
    """n distinct free ports on 127.0.0.1 (held open together so they differ)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def write_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost that is its own CA: the cert
    file doubles as the ``cafile`` clients trust."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "newsletter test mail server")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _password_hash(password: str) -> str:
    """Dovecot's {SHA256} scheme: the passwd-file can't hold a ':' in a plain password."""
    return "{SHA256}" + b64encode(hashlib.sha256(password.encode()).digest()).decode()


def _config(root: Path, ports: list[int], cert: Path, key: Path) -> str:
    imap, imaps, pop3, pop3s = ports
    if os.geteuid() == 0:
        # Dovecot's own unprivileged users run login and internal processes; mail needs a
        # non-root uid too.
        users = "default_login_user = dovenull\ndefault_internal_user = dovecot\n"
        chroot = ""
    else:
        me = pwd.getpwuid(os.getuid()).pw_name
        group = grp.getgrgid(os.getgid()).gr_name
        users = (
            f"default_login_user = {me}\ndefault_internal_user = {me}\n"
            f"default_internal_group = {group}\n"
        )
        # A rootless Dovecot can't chroot its login processes.
        chroot = "  chroot =\n"
    return f"""\
# Written by tests/mailserver.py: a private Dovecot for one test run.
instance_name = newsletter-test-{os.getpid()}-{ports[0]}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
info_log_path = {root}/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
{users}first_valid_uid = 1
first_valid_gid = 1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:{root}/mail/%u
mail_plugins =
pop3_uidl_format = %08Xu%08Xv
passdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {root}/passwd
}}
service imap-login {{
{chroot}  inet_listener imap {{
    address = 127.0.0.1
    port = {imap}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps}
    ssl = yes
  }}
}}
service pop3-login {{
{chroot}  inet_listener pop3 {{
    address = 127.0.0.1
    port = {pop3}
  }}
  inet_listener pop3s {{
    address = 127.0.0.1
    port = {pop3s}
    ssl = yes
  }}
}}
# No auth penalty (up to 15 s per failed login from an IP, anvil-tracked): tests log in
# wrongly on purpose. Without this socket the auth process disables the penalty.
service anvil {{
{chroot}  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-urlauth-login {{
{chroot}}}
"""


def _mail_owner() -> tuple[int, int]:
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        return nobody.pw_uid, nobody.pw_gid
    return os.getuid(), os.getgid()


def _wait_for_ports(process: subprocess.Popen[bytes], log: Path, ports: list[int]) -> None:
    deadline = time.monotonic() + 20
    pending = list(ports)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"dovecot exited with {process.returncode}: {_tail(log)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"dovecot did not listen on {pending} within 20s: {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", pending[0]), timeout=1):
                pending.pop(0)
        except OSError:
            time.sleep(0.05)


def _tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").splitlines()[-10:])
    except OSError:
        return "(no log)"


@contextmanager
def running_dovecot() -> Iterator[MailServer]:
    """Start a private Dovecot, yield where it listens, stop it and remove its files."""
    binary = dovecot_binary()
    root = Path(tempfile.mkdtemp(prefix="newsletter-dovecot-"))
    root.chmod(0o711)
    process: subprocess.Popen[bytes] | None = None
    try:
        cert, key = write_certificate(root)
        uid, gid = _mail_owner()
        mail = root / "mail"
        mail.mkdir()
        os.chown(mail, uid, gid)
        home = f"{root}/mail"
        lines = [
            f"{USER}:{_password_hash(PASSWORD)}:{uid}:{gid}::{home}/{USER}::",
            # Dovecot overrides a setting from a userdb extra field: this user's IMAP
            # session advertises no UIDPLUS after login.
            f"{LEGACY_USER}:{_password_hash(PASSWORD)}:{uid}:{gid}::{home}/{LEGACY_USER}::"
            "userdb_imap_capability=IMAP4rev1 IDLE",
        ]
        (root / "passwd").write_text("\n".join(lines) + "\n")
        ports = _free_ports(4)
        conf = root / "dovecot.conf"
        conf.write_text(_config(root, ports, cert, key))
        log = root / "dovecot.log"
        with open(root / "stderr.log", "wb") as stderr:
            process = subprocess.Popen(
                [binary, "-F", "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
                env=_server_env(),
            )
        _wait_for_ports(process, log, ports)
        yield MailServer(
            host="127.0.0.1",
            imap_port=ports[0],
            imaps_port=ports[1],
            pop3_port=ports[2],
            pop3s_port=ports[3],
            user=USER,
            password=PASSWORD,
            cafile=str(cert),
            root=root,
            log=log,
        )
    finally:
        if process is not None:
            _stop(process)
        shutil.rmtree(root, ignore_errors=True)


def _server_env() -> dict[str, str]:
    """The environment without faketime's preload: the suite runs with the clock moved
    (.ci/clock-moved, ``faketime '+400 days'``) to prove the engine takes time as an input;
    Dovecot is a server on the real clock, as it would be in production, and its own
    timers stall under a faked clock."""
    return {
        k: v for k, v in os.environ.items() if k != "LD_PRELOAD" and not k.startswith("FAKETIME")
    }


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the master (it stops its children); SIGKILL its process group if it hangs."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


@pytest.fixture(scope="module", name="dovecot")
def dovecot_fixture() -> Iterator[MailServer]:
    """A private Dovecot for this test module (see the module docstring)."""
    with running_dovecot() as server:
        yield server


@pytest.fixture(name="mail_server")
def mail_server_fixture(dovecot: MailServer) -> MailServer:
    """The module's Dovecot with both test users' INBOX empty."""
    for user in (dovecot.user, dovecot.legacy_user):
        dovecot.clear(user=user)
    return dovecot
