"""The Procfile's worker takes no new connection while another worker holds clearly fewer."""
from __future__ import annotations

import time

import pytest

from app import gunicorn_worker
from app.gunicorn_worker import StreamingThreadWorker


@pytest.fixture
def worker():
    """A worker as the run loop sees it, without a process, sockets or threads of its own."""
    made = StreamingThreadWorker.__new__(StreamingThreadWorker)
    made.worker_connections = 128
    made.nr_conns = 0
    made._slot = 7
    yield made
    for slot in (7, 8, 9):
        gunicorn_worker.forget(slot)


def takes_another(worker) -> bool:
    return worker.nr_conns < worker.worker_connections


def test_a_worker_alone_takes_connections_up_to_its_bound(worker):
    worker.nr_conns = 127
    assert takes_another(worker)
    worker.nr_conns = 128
    assert not takes_another(worker)


def test_a_worker_far_ahead_of_another_leaves_the_next_connection_to_it(worker):
    gunicorn_worker.publish(8, 10)
    worker.nr_conns = 14
    assert takes_another(worker)  # within the slack
    worker.nr_conns = 15
    assert not takes_another(worker)
    gunicorn_worker.publish(8, 11)  # the other worker took one
    assert takes_another(worker)


def test_the_least_loaded_other_worker_is_the_one_compared_with(worker):
    gunicorn_worker.publish(8, 40)
    gunicorn_worker.publish(9, 2)
    worker.nr_conns = 20
    assert not takes_another(worker)


def test_a_worker_that_stopped_refreshing_its_load_is_left_out(worker, monkeypatch):
    gunicorn_worker.publish(8, 0)
    worker.nr_conns = 50
    assert not takes_another(worker)
    later = time.monotonic() + 10
    monkeypatch.setattr(gunicorn_worker.time, "monotonic", lambda: later)
    assert takes_another(worker)


def test_a_worker_that_ended_is_left_out_at_once(worker):
    gunicorn_worker.publish(8, 0)
    worker.nr_conns = 50
    gunicorn_worker.forget(8)
    assert takes_another(worker)


def test_open_event_streams_count_neither_against_the_bound_nor_as_load(worker, monkeypatch):
    monkeypatch.setattr(gunicorn_worker.open_streams, "held", lambda: 60)
    gunicorn_worker.publish(8, 0)
    worker.nr_conns = 63  # 60 streams and 3 requests
    assert takes_another(worker)
    worker.nr_conns = 65
    assert not takes_another(worker)

