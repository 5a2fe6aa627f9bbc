"""Sync requests take turns, and a waiting push goes before a waiting pull."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

import sync_api
from app.extensions import db
from app.models import Observation
from app.services import audit
from sync_api.client import Unreachable
from sync_api.turns import READ, WRITE, Turns
from tests.conftest import config
from tests.sync.builders import observe


def _eventually(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_a_waiting_push_gets_the_next_turn_before_a_pull_that_waited_longer():
    turns = Turns(1)
    assert turns.take(READ, 0)
    order = []

    def wait_for_turn(kind, name):
        assert turns.take(kind, 5)
        order.append(name)
        turns.give_back()
    pull = threading.Thread(target=wait_for_turn, args=(READ, "pull"))
    pull.start()
    _eventually(lambda: turns.waiting() == (0, 1))
    push = threading.Thread(target=wait_for_turn, args=(WRITE, "push"))
    push.start()
    _eventually(lambda: turns.waiting() == (1, 1))
    turns.give_back()
    pull.join(5)
    push.join(5)
    assert order == ["push", "pull"]


def test_requests_of_one_kind_are_served_in_the_order_they_came():
    turns = Turns(1)
    assert turns.take(WRITE, 0)
    order = []

    def wait_for_turn(name):
        assert turns.take(WRITE, 5)
        order.append(name)
        turns.give_back()
    threads = []
    for number in range(4):
        threads.append(threading.Thread(target=wait_for_turn, args=(number,)))
        threads[-1].start()
        _eventually(lambda n=number: turns.waiting() == (n + 1, 0))
    turns.give_back()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3]


def test_a_request_that_waited_too_long_gives_up_without_keeping_a_place_in_line():
    turns = Turns(1)
    assert turns.take(WRITE, 0)
    assert not turns.take(READ, 0.05)
    assert turns.waiting() == (0, 0)
    turns.give_back()
    assert turns.take(READ, 0)  # the turn was not handed to the one that gave up


def count_observations() -> int:
    db.session.rollback()
    return db.session.execute(select(func.count()).select_from(Observation)).scalar_one()


@config(SYNC_RUNNING_REQUESTS=1, SYNC_TURN_WAIT_SECONDS=0.1)
def test_a_push_that_finds_no_turn_is_refused_with_retry_after_and_applied_later(
        app, device, world, register):
    patient_id = register(world.actor("registration_clerk"))
    nurse = device("nurse")
    observe(nurse, patient_id)
    turns = app.extensions["sync_turns"]
    assert turns.take(READ, 0)  # another request is running
    with pytest.raises(Unreachable) as refused:
        nurse.push()
    assert refused.value.retry_after == 2
    assert "busy" in str(refused.value)
    assert count_observations() == 0
    turns.give_back()
    assert nurse.push()[0]["status"] == "applied"
    assert count_observations() == 1


@config(SYNC_RUNNING_REQUESTS=1, SYNC_TURN_WAIT_SECONDS=0.5)
def test_a_refused_request_gives_its_turn_back(app, device, transport_for, world, register):
    patient_id = register(world.actor("registration_clerk"))
    stranger = transport_for("nurse")
    stranger.headers["Authorization"] = "Bearer crt_not-a-token"
    for _ in range(3):
        assert stranger("POST", "/sync/v1/push", {"client_id": "x", "mutations": []}).status == 401
    nurse = device("nurse")
    observe(nurse, patient_id)
    assert nurse.push()[0]["status"] == "applied"


@pytest.mark.postgres
@config(SYNC_RUNNING_REQUESTS=1)
def test_while_a_pull_runs_a_push_that_came_later_goes_before_the_pull_waiting_already(
        app, device, world, register, monkeypatch):
    patient_id = register(world.actor("registration_clerk"))
    first, second, nurse = device("clinician"), device("clinician"), device("nurse")
    observe(nurse, patient_id)
    running = threading.Event()
    go_on = threading.Event()
    started = []
    real_pull, real_push = sync_api.pull, sync_api.push_batch

    def pull(*args):
        started.append("pull")
        if len(started) == 1:
            running.set()
            go_on.wait(10)
        return real_pull(*args)

    def push_batch(*args, **kwargs):
        started.append("push")
        return real_push(*args, **kwargs)
    monkeypatch.setattr(sync_api, "pull", pull)
    monkeypatch.setattr(sync_api, "push_batch", push_batch)
    turns = app.extensions["sync_turns"]
    failures = []

    def run(work):
        try:
            with app.app_context():
                work()
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)
    threads = [threading.Thread(target=run, args=(first.pull,))]
    threads[0].start()
    assert running.wait(10)
    threads.append(threading.Thread(target=run, args=(second.pull,)))
    threads[1].start()
    _eventually(lambda: turns.waiting() == (0, 1))
    threads.append(threading.Thread(target=run, args=(nurse.push,)))
    threads[2].start()
    _eventually(lambda: turns.waiting() == (1, 1))
    go_on.set()
    for thread in threads:
        thread.join(20)
    assert failures == []
    assert started == ["pull", "push", "pull"]
    assert count_observations() == 1


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has one writer: the second waits
@config(SYNC_RUNNING_REQUESTS=1, SYNC_TURN_WAIT_SECONDS=2)
def test_a_push_waiting_to_write_the_audit_log_lets_another_push_run(
        app, device, world, register, monkeypatch, backend):
    patient_id = register(world.actor("registration_clerk"))
    first, second = device("nurse"), device("nurse")
    observe(first, patient_id, value=61)
    observe(second, patient_id, value=62)
    in_audit, go_on = threading.Event(), threading.Event()
    real_append = audit.append

    def append(entries):
        if not in_audit.is_set():
            in_audit.set()
            go_on.wait(10)
        return real_append(entries)
    monkeypatch.setattr(audit, "append", append)
    answers, failures = {}, []

    def run(name, device_):
        try:
            with app.app_context():
                answers[name] = device_.push()[0]["status"]
        except Exception as exc:  # noqa: BLE001
            failures.append(exc)
    waiting = threading.Thread(target=run, args=("first", first))
    waiting.start()
    assert in_audit.wait(10)
    run("second", second)  # with the one turn held through the audit wait, this would hang
    assert answers == {"second": "applied"}
    go_on.set()
    waiting.join(10)
    assert failures == [] and answers == {"second": "applied", "first": "applied"}
    assert count_observations() == 2


def test_only_so_many_requests_step_aside_at_the_audit_log_at_once():
    turns = Turns(1, away_at_most=1)
    assert turns.take(WRITE, 0)
    assert turns.step_aside()  # its turn is free for the next request
    assert turns.take(WRITE, 0)
    assert not turns.step_aside()  # one is away already: this one keeps its turn
    assert not turns.take(READ, 0)
    turns.came_back()
    assert turns.step_aside()
    assert turns.take(READ, 0)
