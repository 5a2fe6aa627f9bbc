"""How many event streams this process holds open now, over every app in it.

Kept apart from the streams themselves so that the gunicorn worker (app/gunicorn_worker.py)
can read it without importing the app.
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
