"""A plain SMTP connection whose timeout the kernel keeps, so each send and receive is one
system call.

A Python socket with a timeout polls before every ``send`` and ``recv`` (``poll`` then the
call, each releasing and retaking the GIL). A sender writes one message and reads its answer
per round trip, and four senders share a process's GIL: every extra release is a hand-over
between threads, which costs futex calls and context switches. Measured with
``bench/dispatch.py --subscribers 10000 --cli --no-ceiling --strace FILE``: 25.7 futex calls
a message with Python's timeout, 15.8 with the kernel's, and a third fewer system calls in all.

So the socket is left blocking and the timeout is set on it with ``SO_RCVTIMEO`` and
``SO_SNDTIMEO``: a receive or a send that waits longer fails with ``EAGAIN``, which the reply
reader turns into ``TimeoutError("timed out")``, as the Python timeout said it, so smtplib
and the backend see the same errors as before. Connecting still uses Python's timeout.

Plain TCP only: a TLS socket buffers records of its own and a read cut short by ``EAGAIN``
would surface as an SSL error, so ``smtps://`` and STARTTLS keep smtplib's own connection.
"""

from __future__ import annotations

import smtplib
import socket
import struct

#: Bytes asked of one ``recv``: every reply that has arrived (smtplib refuses a line over
#: 8192 bytes itself).
_RECV = 65536
#: smtplib's longest reply line (``smtplib._MAXLINE``), kept here as the reply parser's too.
_MAXLINE = 8192


def kernel_timeout(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking, its sends and receives timed out by the kernel after
    ``seconds`` (greater than 0: the kernel reads 0 as no limit)."""
    # Whole microseconds, at least one (a shorter time would round to 0, no limit), split so
    # the microseconds stay under a million (the kernel refuses more with EDOM).
    whole, micro = divmod(max(1, round(seconds * 1_000_000)), 1_000_000)
    value = struct.pack("ll", whole, micro)
    sock.settimeout(None)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


class ReplyLines:
    """smtplib's reply reader (its ``file``): ``readline`` over a blocking socket with a
    buffer of its own, one ``recv`` for as many replies as have arrived."""

    __slots__ = ("_sock", "_buffer")

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = b""

    def readline(self, limit: int = -1) -> bytes:
        """One line with its ``\\n``; at most ``limit`` bytes (``limit`` < 0: any length);
        what is left when the server closes the connection (``b""`` for nothing)."""
        buffer = self._buffer
        end = buffer.find(b"\n") + 1
        while not end and (limit < 0 or len(buffer) < limit):
            try:
                chunk = self._sock.recv(_RECV)
            except BlockingIOError:  # SO_RCVTIMEO ran out
                raise TimeoutError("timed out") from None
            if not chunk:
                break
            buffer += chunk
            end = buffer.find(b"\n") + 1
        if not end:
            end = len(buffer)
        if limit >= 0:
            end = min(end, limit)
        self._buffer = buffer[end:]
        return buffer[:end]

    def one_line_reply(self) -> tuple[int, bytes] | None:
        """A whole one-line reply already in the buffer, parsed as smtplib's ``getreply``
        parses it, in one pass; None for anything else (a multi-line reply, a line not yet
        received or too long), which ``getreply`` reads line by line.

        Four replies a message are read (MAIL, RCPT, DATA and the end of data), nearly always
        one line each, and the envelope's three usually arrive together: reading replies
        through smtplib's loop of ``readline`` calls was about 45% of the SMTP client's
        Python time (cProfile). A reply not yet received still goes through that loop."""
        buffer = self._buffer
        end = buffer.find(b"\n") + 1
        if not 0 < end <= _MAXLINE:
            return None
        line = buffer[:end]
        if line[3:4] == b"-":
            return None
        self._buffer = buffer[end:]
        try:
            code = int(line[:3])
        except ValueError:
            code = -1
        return code, line[4:].strip(b" \t\r\n")

    def close(self) -> None:
        self._buffer = b""


class KernelTimedSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` over a plain TCP socket timed out by the kernel (see the module)."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        # smtplib's own hook for making the socket (typeshed does not declare it).
        sock: socket.socket = super()._get_socket(host, port, timeout)  # type: ignore[misc]
        kernel_timeout(sock, timeout)
        return sock

    def getreply(self) -> tuple[int, bytes]:
        # smtplib makes its reader here, on first use after each connect: ours instead of
        # ``sock.makefile()``, whose reader reads a timed-out receive as the end of the
        # stream ("Connection unexpectedly closed", not "timed out").
        file = self.file
        if file is None and self.sock is not None:
            file = self.file = ReplyLines(self.sock)
        if isinstance(file, ReplyLines) and not self.debuglevel:
            reply = file.one_line_reply()
            if reply is not None:
                return reply
        return super().getreply()
