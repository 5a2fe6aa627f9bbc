"""A pull that finds a change held back behind an older transaction waits a moment for it,
except while pushes wait for the turn the pull holds."""
from __future__ import annotations

import threading
import time

import pytest

from sync_api import turns
from tests.sync.test_pull_order import OpenWrite, held_observations, observation

pytestmark = pytest.mark.postgres


@pytest.fixture
def app_overrides():
    return {"SYNC_PULL_SETTLE_SECONDS": 5.0}


@pytest.fixture(params=["postgresql"])
def backend(request):
    """PostgreSQL only: SQLite has one writer at a time, so nothing is ever held back."""
    return request.param


def pull_while_an_older_write_commits(app, world, register, device):
    """The nurse pulls while a younger write is committed and an older one still open; the
    older one commits half a second into the pull. Returns the nurse's device, what the pull
    brought and the two changes."""
    pid = register(world.actor("registration_clerk"))
    nurse = device("nurse")
    nurse.pull()
    older = OpenWrite(app, world.actor("nurse"), observation(pid, 63))
    older.start()
    assert older.written.wait(10)
    younger = OpenWrite(app, world.actor("clinician"), observation(pid, 64))
    younger.start()
    assert younger.written.wait(10)
    younger.commit_now.set()
    assert younger.done.wait(10)
    def pull():
        with app.app_context():
            nurse.pull()
    pulled = threading.Thread(target=pull)
    pulled.start()
    time.sleep(0.5)
    older.commit_now.set()
    assert older.done.wait(10)
    pulled.join(10)
    return nurse, held_observations(nurse), {older.mutation.entity_id, younger.mutation.entity_id}


def test_a_pull_waits_for_an_older_write_and_brings_both(app, world, register, device):
    _nurse, held, both = pull_while_an_older_write_commits(app, world, register, device)
    assert held == both


def test_a_pull_does_not_wait_while_pushes_wait_for_a_turn(app, world, register, device,
                                                            monkeypatch):
    monkeypatch.setattr(turns, "pushes_waiting", lambda: True)
    nurse, held, both = pull_while_an_older_write_commits(app, world, register, device)
    assert held == set()  # held back behind the older write, which the pull did not wait for
    nurse.pull()
    assert held_observations(nurse) == both
