"""The Procfile's gunicorn worker: gthread, taking a connection more for each event stream it
holds.

`--worker-connections` bounds the requests a worker takes at once: past it, connections wait
in the listen backlog in arrival order for whichever worker frees a thread first, which serves
a burst of tablets faster than one worker holding most of them (docs/decisions.md). An open
page's event stream holds its connection and thread for a minute while hardly using the CPU;
counted against that bound, a hundred open pages would leave no room for requests. So the bound
grows by one for each stream the worker holds, and `--threads` leaves room for them.
"""
from __future__ import annotations

from gunicorn.workers.gthread import ThreadWorker

from app import open_streams


class StreamingThreadWorker(ThreadWorker):
    @property
    def worker_connections(self) -> int:
        return self._request_connections + open_streams.held()

    @worker_connections.setter
    def worker_connections(self, value: int) -> None:
        self._request_connections = value
