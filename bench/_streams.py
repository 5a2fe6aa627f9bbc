"""Open pages' live-update streams (`GET /sync/v1/events`), held while a benchmark runs.

Each tablet with the app open holds one stream, which a gthread worker serves on one of its
threads for as long as it lasts. A stream is reopened when it ends, after the `retry:` the
server asked for, as a browser's EventSource does.
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter

READ_LIMIT = 1 << 16


class Streams:
    def __init__(self, port: int, tokens: list[str]):
        self.port = port
        self.tokens = tokens
        self.counts = Counter()          # ready, poke, busy, ended, HTTP status ..., error ...
        self.first_answer: list[float] = []  # seconds from opening to the first event
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self._answered = 0
        self._all_answered = asyncio.Event()

    async def open(self, wait_s: float = 10.0) -> int:
        """Open every stream; wait until each has had its first answer, or `wait_s`.
        Returns how many did."""
        self._tasks = [asyncio.create_task(self._hold(t)) for t in self.tokens]
        try:
            await asyncio.wait_for(self._all_answered.wait(), wait_s)
        except asyncio.TimeoutError:
            pass
        return self._answered

    async def close(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _answered_once(self, since: float) -> None:
        self.first_answer.append(time.perf_counter() - since)
        self._answered += 1
        if self._answered == len(self.tokens):
            self._all_answered.set()

    async def _hold(self, token: str) -> None:
        first = True
        while not self._stop.is_set():
            retry_ms = 2000
            t0 = time.perf_counter()
            writer = None
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=READ_LIMIT)
                writer.write((f"GET /sync/v1/events HTTP/1.0\r\nHost: 127.0.0.1:{self.port}\r\n"
                              f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n").encode())
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                while (await reader.readline()) not in (b"\r\n", b""):
                    pass
                if status != 200:
                    self.counts[f"HTTP {status}"] += 1
                    if first:
                        self._answered_once(t0)
                        first = False
                else:
                    while line := await reader.readline():
                        text = line.decode().strip()
                        if text.startswith("retry:"):
                            retry_ms = int(text.partition(":")[2])
                        elif text.startswith("event:"):
                            self.counts[text.partition(":")[2].strip()] += 1
                            if first:
                                self._answered_once(t0)
                                first = False
                    self.counts["ended"] += 1
            except (OSError, ValueError, IndexError) as exc:
                self.counts[f"error {type(exc).__name__}"] += 1
            finally:
                if writer is not None:
                    writer.close()
            try:
                await asyncio.wait_for(self._stop.wait(), retry_ms / 1000)
            except asyncio.TimeoutError:
                pass
