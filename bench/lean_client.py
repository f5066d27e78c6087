"""The reference ceiling for ``bench/dispatch.py``: the leanest pipelining Python SMTP sender
of the same message bytes, over the same number of connections, into the same sink.

Each connection (a thread, as the engine's senders are) sends the same ready message,
dot-stuffed once, to N/connections recipients: the next envelope (MAIL, RCPT, DATA) rides in
the write that carries this message's body and end-of-data dot, so one round trip per message
(RFC 2920), exactly as ``newsletter/backends/smtp.py`` does. No database, no personalization,
no journal, no ledger: what Python and the sink allow on this machine.

    python bench/lean_client.py --messages 50000 --connections 2 --port 2600
"""

from __future__ import annotations

import argparse
import resource
import socket
import threading
import time


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Replies:
    """Reads SMTP replies (possibly several per recv) off one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def read(self) -> int:
        while True:
            end = self.buffer.find(b"\r\n")
            while end >= 0:
                line, self.buffer = self.buffer[:end], self.buffer[end + 2 :]
                if line[3:4] != b"-":
                    return int(line[:3])
                end = self.buffer.find(b"\r\n")
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk


def _envelope(i: int) -> bytes:
    return f"MAIL FROM:<bounces@example.com>\r\nRCPT TO:<r{i}@example.com>\r\nDATA\r\n".encode()


def _connection(host: str, port: int, body: bytes, first: int, count: int) -> None:
    with socket.create_connection((host, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        replies = _Replies(sock)
        replies.read()  # greeting
        sock.sendall(b"EHLO lean\r\n")
        replies.read()
        sock.sendall(_envelope(first))
        for i in range(first, first + count):
            for _ in range(3):  # MAIL, RCPT, DATA (354)
                replies.read()
            following = _envelope(i + 1) if i + 1 < first + count else b""
            sock.sendall(body + following)
            if replies.read() != 250:
                raise RuntimeError("message refused")
        sock.sendall(b"QUIT\r\n")


def lean_send(
    host: str, port: int, message: bytes, messages: int, connections: int
) -> tuple[float, float]:
    """Send ``messages`` copies of ``message``; (wall seconds, CPU seconds of this process)."""
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    body = stuffed + (b"" if stuffed.endswith(b"\r\n") else b"\r\n") + b".\r\n"
    share = [
        messages // connections + (1 if k < messages % connections else 0)
        for k in range(connections)
    ]
    starts = [sum(share[:k]) for k in range(connections)]
    threads = [
        threading.Thread(target=_connection, args=(host, port, body, starts[k], share[k]))
        for k in range(connections)
    ]
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, cpu_seconds() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--connections", type=int, default=2)
    parser.add_argument("--port", type=int, default=2600)
    parser.add_argument("--size", type=int, default=53_000, help="bytes of a synthetic message")
    args = parser.parse_args()
    line = b"x" * 74 + b"\r\n"
    message = b"Subject: lean\r\n\r\n" + line * (args.size // len(line))
    wall, cpu = lean_send("127.0.0.1", args.port, message, args.messages, args.connections)
    rate, per = args.messages / wall, cpu / args.messages * 1e6
    print(f"lean client: {rate:,.0f} messages/s, {per:.0f} us CPU/message")


if __name__ == "__main__":
    main()
