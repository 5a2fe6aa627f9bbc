"""Many devices at once from one process: a small HTTP/1.1 keep-alive client on asyncio
streams (one connection per device, one request in flight on it, as a sync worker has), and
the latency figures of what it saw.

No third-party HTTP client: one event-loop thread carrying a few hundred sockets costs far less
CPU than a thread per device, and the benchmark measures what it spends (`process_time`).
"""
from __future__ import annotations

import asyncio
import time


class HttpError(Exception):
    """The connection failed or the answer could not be read (not an HTTP error status)."""


class Connection:
    def __init__(self, port: int, headers: dict[str, str], timeout: float = 60.0):
        self.port, self.timeout = port, timeout
        self.head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.reader = self.writer = None

    async def _open(self):
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes, int]:
        """(status, body, bytes received); a keep-alive connection the server closed is
        opened again once (a push or pull sent again is answered alike)."""
        for attempt in (0, 1):
            if self.writer is None:
                await self._open()
            try:
                return await asyncio.wait_for(self._exchange(path, body), self.timeout)
            except (ConnectionError, asyncio.IncompleteReadError, HttpError) as exc:
                await self.close()
                if attempt or not isinstance(exc, (ConnectionResetError, asyncio.IncompleteReadError)):
                    raise HttpError(str(exc) or type(exc).__name__) from exc
            except asyncio.TimeoutError:
                await self.close()
                raise
        raise AssertionError("unreachable")

    async def _exchange(self, path: str, body: bytes) -> tuple[int, bytes, int]:
        self.writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n{self.head}"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        fields = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.strip()
        if fields.get("transfer-encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                data += chunk[:-2]
            data = bytes(data)
        elif "content-length" in fields:
            data = await self.reader.readexactly(int(fields["content-length"]))
        else:  # ends with the connection
            data = await self.reader.read()
            fields["connection"] = "close"
        if fields.get("connection", "").lower() == "close":
            await self.close()
        return status, data, len(head) + len(data)

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (ConnectionError, OSError):
                pass
        self.reader = self.writer = None


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def latency_summary(seconds: list[float]) -> dict:
    return {"n": len(seconds), "p50_ms": _ms(percentile(seconds, 50)),
            "p95_ms": _ms(percentile(seconds, 95)), "p99_ms": _ms(percentile(seconds, 99)),
            "max_ms": _ms(max(seconds) if seconds else None)}


def _ms(s):
    return None if s is None else round(s * 1000, 1)


class Clock:
    """Wall time and this process's own CPU over a section."""

    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
