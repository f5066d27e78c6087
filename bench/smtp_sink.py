"""A minimal asyncio SMTP sink for benchmarks: accepts everything, counts, keeps Message-IDs.

aiosmtpd reads a message line by line (~1.6 ms CPU per 767-line message) and would be the
bottleneck; this sink reads DATA with one ``readuntil``. It is a benchmark tool, not a server:
no TLS, no AUTH, no limits. Run it in its own process:

    python bench/smtp_sink.py --port 2525 --ids /tmp/ids.txt

On SIGTERM it writes one Message-ID per line to ``--ids`` (if given) and the count to stdout;
with ``--times FILE``, the wall-clock times (``time.time()``) of the first and the last
message received, on one line, to FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import sys
import time

_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\r\n]+>)", re.IGNORECASE | re.MULTILINE)


EHLO_REPLY = b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n"


class Sink:
    def __init__(self, keep_ids: bool) -> None:
        self.count = 0
        #: Kept only when asked for (``--ids``): a million of them are 100 MiB of the sink.
        self.keep_ids = keep_ids
        self.ids: list[bytes] = []
        #: When the first and the last message arrived (``time.time()``; 0 before the first).
        self.first = self.last = 0.0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ready\r\n")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(
                        b"250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 52428800\r\n"
                    )
                elif verb == b"DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    data = await reader.readuntil(b"\r\n.\r\n")
                    self.count += 1
                    self.last = time.time()
                    if not self.first:
                        self.first = self.last
                    if self.keep_ids and (found := _MESSAGE_ID.search(data, 0, 4096)):
                        self.ids.append(found.group(1))
                    writer.write(b"250 ok\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:  # MAIL, RCPT, RSET, NOOP
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def main(port: int, ids_path: str | None, times_path: str | None = None) -> None:
    sink = Sink(keep_ids=ids_path is not None)
    server = await asyncio.start_server(sink.handle, "127.0.0.1", port, limit=2**26)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    async with server:
        await stop.wait()
    if ids_path:
        with open(ids_path, "wb") as fh:
            fh.write(b"\n".join(sink.ids) + (b"\n" if sink.ids else b""))
    if times_path:
        with open(times_path, "w") as fh:
            fh.write(f"{sink.first!r} {sink.last!r}\n")
    print(sink.count, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ids", default=None)
    parser.add_argument("--times", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.port, args.ids, args.times))
    sys.exit(0)
