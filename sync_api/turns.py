"""Sync requests take turns to run in a process, and a waiting push goes before a waiting pull.

At a clinic's busy hour every tablet has a request in flight. Run all at once, they share the
cores, the interpreter lock and the connection pool, and every one of them is slow, a push as
much as a pull of a thousand records. A push is the only copy of a write leaving the device;
a pull is a read the device will simply make again. So a process runs a few sync requests at
once (the interpreter runs one thread at a time anyway: the others only overlap their waits on
the database), and each turn that ends goes to the oldest waiting push, or failing one, to the
oldest waiting pull.

A request steps aside, giving its turn back, when it reaches the audit log. Appends take turns
on the one hash chain across every process; waiting there costs no CPU, and the requests that
wait together are written together (app/services/audit.py), so a turn held through that wait
would both idle the process and keep the group small. What follows the append (the commit,
writing the answer) runs without a turn. A request that stepped aside still holds its database
connection and transaction, so only AWAY_AT_MOST may be away at once; the next keeps its turn
through the append. No request waits for a turn once it has stepped aside.
"""
from __future__ import annotations

import threading
from collections import deque

from flask import current_app, g

from app.config import SYNC_AWAY_AT_MOST as AWAY_AT_MOST

WRITE, READ = 0, 1


class Turns:
    def __init__(self, running: int, away_at_most: int = AWAY_AT_MOST):
        if running < 1:
            raise ValueError("at least one request must be able to run")
        self._lock = threading.Lock()
        self._free = running
        self._waiting: tuple[deque, deque] = (deque(), deque())  # by kind: WRITE, READ
        self._away, self._away_at_most = 0, away_at_most

    def take(self, kind: int, timeout: float) -> bool:
        """Wait for a turn; False if none came within `timeout` seconds."""
        with self._lock:
            # A turn that ends is handed straight to a waiter, so a free one means nobody waits.
            if self._free:
                self._free -= 1
                return True
            ticket = threading.Event()
            self._waiting[kind].append(ticket)
        if ticket.wait(timeout):
            return True
        with self._lock:
            if ticket.is_set():  # handed over just as the wait ran out
                return True
            self._waiting[kind].remove(ticket)
            return False

    def give_back(self) -> None:
        with self._lock:
            for waiting in self._waiting:
                if waiting:
                    waiting.popleft().set()
                    return
            self._free += 1

    def step_aside(self) -> bool:
        """Give the turn back for the rest of the request, unless enough are away already."""
        with self._lock:
            if self._away >= self._away_at_most:
                return False
            self._away += 1
        self.give_back()
        return True

    def came_back(self) -> None:
        with self._lock:
            self._away -= 1

    def waiting(self) -> tuple[int, int]:
        """How many pushes and pulls wait now."""
        with self._lock:
            return len(self._waiting[WRITE]), len(self._waiting[READ])


def _turns() -> Turns:
    return current_app.extensions["sync_turns"]


def begin(kind: int) -> bool:
    """Wait for this request's turn; False if the server stayed too busy to give one."""
    if not _turns().take(kind, current_app.config["SYNC_TURN_WAIT_SECONDS"]):
        return False
    g.sync_turn = kind
    return True


def step_aside() -> None:
    """At the audit log: let the next request run meanwhile, if few are away already."""
    if g.get("sync_turn") is not None and _turns().step_aside():
        g.pop("sync_turn")
        g.sync_away = True


def end() -> None:
    """The request is over: its turn, if it still holds one, goes to the next in line."""
    if g.pop("sync_turn", None) is not None:
        _turns().give_back()
    if g.pop("sync_away", False):
        _turns().came_back()


def pushes_waiting() -> bool:
    return _turns().waiting()[WRITE] > 0
