"""On PostgreSQL a change with a lower seq can commit after one with a higher seq: a pull
must never step over it. These tests make writers commit out of order on purpose."""
from __future__ import annotations

import random
import threading
import time

import pytest

from app.domain.ids import new_id
from app.extensions import db
from app.services.apply import apply
from app.services.results import Mutation

pytestmark = pytest.mark.postgres


@pytest.fixture
def app_overrides():
    return {"SYNC_PULL_SETTLE_SECONDS": 0.0}  # never wait: a skip would show at once


@pytest.fixture(params=["postgresql"])
def backend(request):
    """PostgreSQL only: SQLite has one writer at a time, so its commits cannot interleave."""
    return request.param


def observation(patient_id: str, value: int) -> Mutation:
    return Mutation(mid=new_id(), type="observation.record", entity="observation",
                    entity_id=new_id(), data={"patient_id": patient_id, "code": "8867-4",
                                              "value": value, "unit": "/min",
                                              "effective_at": "2026-11-21T09:00:00Z"})


def held_observations(device) -> set[str]:
    return {key[1] for key in device.store.rows if key[0] == "observation"}


class OpenWrite(threading.Thread):
    """Applies a mutation in its own transaction and commits only when told to."""

    def __init__(self, app, actor, mutation: Mutation, start_first: bool = False):
        super().__init__(daemon=True)
        self.app, self.actor, self.mutation = app, actor, mutation
        self.start_first = start_first
        self.written, self.commit_now, self.done = (threading.Event() for _ in range(3))
        self.began = threading.Event()

    def run(self):
        with self.app.app_context():
            if self.start_first:
                # Take a transaction id before writing anything, so this transaction is
                # older than one that writes its change first.
                db.session.execute(db.text("SELECT pg_current_xact_id()"))
                self.began.set()
                self.commit_now.wait(10)
                self.commit_now.clear()
            apply(self.mutation, self.actor, source="test")
            self.written.set()
            self.commit_now.wait(10)
            db.session.commit()
            db.session.remove()
        self.done.set()


def test_a_change_committed_after_a_later_seq_is_still_delivered(
        app, world, register, device):
    pid = register(world.actor("registration_clerk"))
    nurse = device("nurse")
    nurse.pull()
    slow = OpenWrite(app, world.actor("nurse"), observation(pid, 61))
    slow.start()
    assert slow.written.wait(10)               # seq n taken, not committed
    quick = OpenWrite(app, world.actor("clinician"), observation(pid, 62))
    quick.start()
    assert quick.written.wait(10)              # seq n+1 taken
    quick.commit_now.set()
    assert quick.done.wait(10)                 # n+1 committed while n is still open
    nurse.pull()
    slow.commit_now.set()
    assert slow.done.wait(10)
    nurse.pull()
    assert held_observations(nurse) == {slow.mutation.entity_id, quick.mutation.entity_id}


def test_an_older_transaction_writing_last_is_still_delivered(
        app, world, register, device):
    pid = register(world.actor("registration_clerk"))
    nurse = device("nurse")
    nurse.pull()
    older = OpenWrite(app, world.actor("nurse"), observation(pid, 63), start_first=True)
    older.start()
    assert older.began.wait(10)                # lower transaction id, nothing written yet
    younger = OpenWrite(app, world.actor("clinician"), observation(pid, 64))
    younger.start()
    assert younger.written.wait(10)
    younger.commit_now.set()
    assert younger.done.wait(10)
    nurse.pull()
    older.commit_now.set()                     # now it writes its change, with a higher seq
    assert older.written.wait(10)
    older.commit_now.set()
    assert older.done.wait(10)
    nurse.pull()
    assert held_observations(nurse) == {older.mutation.entity_id, younger.mutation.entity_id}


def test_many_writers_committing_in_random_order_while_a_device_pulls(
        app, world, register, device):
    pid = register(world.actor("registration_clerk"))
    nurse = device("nurse")
    nurse.pull()
    actors = [world.actor(role) for role in ("nurse", "clinician", "lab")]
    rng = random.Random(20261121)
    written: list[str] = []
    lock = threading.Lock()

    def writer(index: int):
        pauses = (rng.uniform(0, 0.05), rng.uniform(0, 0.1))
        with app.app_context():
            for round_ in range(4):
                mutation = observation(pid, 60 + (index * 4 + round_) % 60)
                time.sleep(pauses[0])
                apply(mutation, actors[index % len(actors)], source="test")
                time.sleep(pauses[1])       # hold the seq, uncommitted, while others commit
                db.session.commit()
                with lock:
                    written.append(mutation.entity_id)
            db.session.remove()

    writers = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in writers:
        thread.start()
    pulls = 0
    while any(thread.is_alive() for thread in writers):
        nurse.pull()
        pulls += 1
    nurse.pull()
    assert pulls > 3, "the device pulled while writers were still committing"
    assert held_observations(nurse) == set(written)
    assert len(written) == 32
