"""The Procfile's gunicorn worker: gthread, taking a connection more for each event stream it
holds, and none while another worker holds clearly fewer requests.

`--worker-connections` bounds the requests a worker takes at once (docs/decisions.md). An open
page's event stream holds its connection and thread for a minute while hardly using the CPU;
counted against that bound, a hundred open pages would leave no room for requests. So the bound
grows by one for each stream the worker holds, and `--threads` leaves room for them.

Within the bound, the workers race for each new connection, and when a clinic's tablets all
sync at once one worker can win most of the burst: the peak benchmark saw 123 first pushes
queue in one worker and 77 in the other, which then served pulls while those pushes waited.
So each worker publishes how many requests it holds, and stops accepting while it holds more
than `_SLACK` above the least loaded other worker: the next connection goes to that one.
"""
from __future__ import annotations

import gc
import multiprocessing
import time

from gunicorn.workers.gthread import ThreadWorker

from app import open_streams

_SLOTS = 64
_SLACK = 4  # about the requests a worker runs at once: less would only trade places
_ALIVE_SECONDS = 3.0  # a worker refreshes its slot at least every second
# Made when the master imports this module, before it forks the workers, so every worker
# reads and writes the same memory: per slot, the requests held and when that was written
# (CLOCK_MONOTONIC is one clock for the whole machine).
_LOAD = multiprocessing.RawArray("d", 2 * _SLOTS)


def publish(slot: int, requests: int) -> None:
    _LOAD[2 * slot], _LOAD[2 * slot + 1] = requests, time.monotonic()


def least_held_by_others(slot: int) -> float | None:
    now = time.monotonic()
    held = [_LOAD[2 * other] for other in range(_SLOTS)
            if other != slot and now - _LOAD[2 * other + 1] < _ALIVE_SECONDS]
    return min(held, default=None)


def forget(slot: int) -> None:
    _LOAD[2 * slot + 1] = 0.0


def tune_garbage_collection() -> None:
    """For a process that has loaded the app and now serves requests.

    The app's modules, mappers, schemas and caches (about 160,000 objects) live as long as
    the process, yet each full collection walked them all: about 130 ms with every thread
    stopped, six times a worker in the peak benchmark. Frozen, they are left out. And a
    request makes and drops objects by the thousand, which at Python's default (a young
    collection every 700 more objects) meant about 800 collections a worker in that run: 1.3 s
    of CPU in all, 0.04 s with these settings, memory unchanged. Cycles are still collected,
    only later."""
    gc.freeze()
    gc.set_threshold(YOUNG_OBJECTS_BEFORE_COLLECTING, *gc.get_threshold()[1:])


YOUNG_OBJECTS_BEFORE_COLLECTING = 10_000


class StreamingThreadWorker(ThreadWorker):
    def init_process(self):
        # Ages count up from 1. A worker 64 restarts younger than a live one would share its
        # slot: the two then count as one, and the balance is only rougher, never wrong.
        self._slot = self.age % _SLOTS
        try:
            super().init_process()
        finally:
            forget(self._slot)

    def run(self):
        # The app is loaded: from here this worker takes connections. A load test waits for
        # every worker's line, as a burst aimed at a half-started server measures the start.
        tune_garbage_collection()
        self.log.info("Worker ready to serve (pid: %s)", self.pid)
        super().run()

    def notify(self):
        super().notify()
        if not self.alive:  # draining to stop: the others must not wait for it to take more
            forget(self._slot)

    @property
    def worker_connections(self) -> int:
        streams = open_streams.held()
        bound = self._request_connections + streams
        slot = getattr(self, "_slot", None)
        if slot is None:  # before init_process: no slot yet
            return bound
        requests = self.nr_conns - streams
        publish(slot, requests)
        least = least_held_by_others(slot)
        if least is not None and requests > least + _SLACK:
            return self.nr_conns  # full for now: gthread accepts below the bound only
        return bound

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._request_connections = value
