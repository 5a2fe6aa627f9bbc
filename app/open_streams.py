"""How many event streams this process holds open now, over every app in it.

Kept apart from the streams themselves (sync_api/events.py) so that the gunicorn worker class
(app/gunicorn_worker.py), loaded by the master process too, reads it without importing the
sync API and the models.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_held = 0


def opened() -> None:
    global _held
    with _lock:
        _held += 1


def closed() -> None:
    global _held
    with _lock:
        _held -= 1


def held() -> int:
    return _held
