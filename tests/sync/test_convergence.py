"""Convergence, proven by search: devices writing every mutation type over a network that
drops, duplicates, delays and reorders deliveries, loses answers after commit, and a server
that restarts. Whatever happens, every answered mutation is applied exactly once, each
device's order is kept, and after a clean sync every device holds what the server holds.
"""
from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test,
)
from sqlalchemy import select

from app import create_app
from app.demo.signature import signature_data_url
from app.domain.ids import new_id
from app.extensions import db
from app.models import ENTITY_MODELS, ChangeLog, Clinic, Membership, MutationResult, SyncClient
from app.models.types import utcnow
from app.services import tokens
from sync_api.client import Reply, SyncClient as Device, SyncFailed, Unreachable
from tests.conftest import BASE_OVERRIDES

pytestmark = pytest.mark.postgres

ROLES = ("registration_clerk", "nurse", "clinician", "pharmacist")
SIGNATURE = signature_data_url()
SLOT = (utcnow() + timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)
FAULTS = ("none", "none", "drop_request", "lose_answer", "deliver_twice")


class Server:
    """The app as a process: restarting it throws away everything held in memory."""

    def __init__(self, config: dict):
        self.config = config
        self.app = create_app(config)

    def restart(self) -> None:
        with self.app.app_context():
            db.engine.dispose()
            db.engines["audit"].dispose()
        self.app = create_app(self.config)

    def call(self, token: str, path: str, body: dict) -> Reply:
        response = self.app.test_client().post(path, json=body,
                                               headers={"Authorization": f"Bearer {token}"})
        return Reply(response.status_code, response.get_json(silent=True) or {},
                     dict(response.headers))


class Network:
    """Between one device and the server. The test decides what goes wrong with each send."""

    def __init__(self, server: Server, token: str):
        self.server, self.token = server, token
        self.fault = "none"
        self.in_flight: list[tuple[str, dict]] = []  # copies still wandering the network

    def __call__(self, method: str, path: str, body: dict) -> Reply:
        fault, self.fault = self.fault, "none"
        self.in_flight.append((path, body))
        del self.in_flight[:-8]
        if fault == "drop_request":
            raise Unreachable("request lost")
        reply = self.server.call(self.token, path, body)
        if fault == "deliver_twice":
            reply = self.server.call(self.token, path, body)
        if fault == "lose_answer":
            raise Unreachable("answer lost after the server committed")
        return reply

    def deliver_late(self, index: int) -> None:
        """An old copy of a request arrives now, after newer ones; its answer goes nowhere."""
        if self.in_flight:
            path, body = self.in_flight[index % len(self.in_flight)]
            self.server.call(self.token, path, body)


def _clinic_for_example(org_id: str, users: dict) -> str:
    """Each example gets its own clinic, so its devices' subsets hold only its patients."""
    clinic_id = new_id()
    db.session.add(Clinic(id=clinic_id, organization_id=org_id, name=f"Clinic {clinic_id[-6:]}",
                          code=clinic_id[-8:].upper()))
    for role, user in users.items():
        db.session.add(Membership(id=new_id(), user_id=user.id, clinic_id=clinic_id, role=role))
    db.session.commit()
    return clinic_id


EXAMPLES = 12  # bounded by count, not time: the same cases run in CI on every push


def test_devices_converge_whatever_the_network_does(app, world, database_urls):
    main_url, audit_url = database_urls
    server = Server({**BASE_OVERRIDES, "SQLALCHEMY_DATABASE_URI": main_url,
                     "SQLALCHEMY_BINDS": {"audit": audit_url}, "SYNC_PULL_SETTLE_SECONDS": 0.2})
    users = {role: world.user(role) for role in ROLES}
    user_ids = {role: user.id for role, user in users.items()}
    org_id = world.org.id
    serial = itertools.count(1)

    class Clinic(RuleBasedStateMachine):
        @initialize()
        def open_clinic(self):
            self.clinic_id = _clinic_for_example(org_id, users)
            self.tokens = {}
            for role, user in users.items():
                self.tokens[role] = tokens.issue(user, "convergence", self.clinic_id)
            db.session.commit()
            self.networks = {role: Network(server, self.tokens[role]) for role in ROLES}
            self.devices = {role: Device(self.networks[role], client_id=f"conv-{role[:5]}-{new_id()[-12:]}")
                            for role in ROLES}
            self.created: dict[str, dict[str, list[str]]] = {r: {} for r in ROLES}
            self.queued: dict[str, list[str]] = {r: [] for r in ROLES}
            # A morning's start, so the first steps already have patients, a visit and an
            # order to act on.
            for _ in range(3):
                self.register_patient("registration_clerk", "Abena")
            self.devices["registration_clerk"].push()
            self.devices["clinician"].pull()
            first = self.known("clinician", "patient")[0]["id"]
            self.create("clinician", "medication.order", "medication_request", {
                "patient_id": first, "medication": "Paracetamol", "dose": "500 mg",
                "route": "oral", "frequency": "daily", "quantity": 8})
            self.create("clinician", "visit.start", "visit", {
                "patient_id": first, "clinic_id": self.clinic_id, "station": "triage"})
            self.devices["clinician"].push()
            for device in self.devices.values():
                device.pull()

        # What a device knows about: what it pulled, and what it made itself.
        def known(self, role: str, entity: str, **match) -> list[dict]:
            rows = [record for (kind, _), record in self.devices[role].store.rows.items()
                    if kind == entity and all(record.get(k) == v for k, v in match.items())]
            own = [{"id": i, "version": 1, "_own": True}
                   for i in self.created[role].get(entity, []) if not match]
            return sorted(rows, key=lambda r: r["id"]) + own

        def queue(self, role: str, type_name: str, entity: str, entity_id: str, data: dict,
                  **envelope) -> None:
            mid = self.devices[role].queue(type_name, entity, entity_id, data, **envelope)
            self.queued[role].append(mid)

        def create(self, role: str, type_name: str, entity: str, data: dict) -> None:
            entity_id = new_id()
            self.queue(role, type_name, entity, entity_id, data)
            self.created[role].setdefault(entity, []).append(entity_id)

        # Writing: every mutation type, by a role allowed to make it ---------------------
        @rule(role=st.sampled_from(("registration_clerk", "nurse", "clinician")),
              given=st.sampled_from(("Ama", "Kofi", "Esi", "Yaw")))
        def register_patient(self, role, given):
            self.create(role, "patient.register", "patient", {
                "given_name": given, "family_name": f"Mensah{next(serial)}", "sex": "female",
                "birth_date": "1988-03-04", "clinic_id": self.clinic_id, "phone": "0700 000",
                "identifiers": [{"system": "mrn", "value": f"MRN-{next(serial)}"}]})

        @rule(data=st.data(), field=st.sampled_from(("phone", "address", "given_name")),
              value=st.sampled_from(("0711 111", "0722 222", "Hill road", "Akosua")))
        def update_patient(self, data, field, value):
            patients = [p for p in self.known("registration_clerk", "patient") if "_own" not in p]
            if not patients:
                return
            patient = data.draw(st.sampled_from(patients))
            if field == "phone" and not value[0].isdigit() or field != "phone" and value[0].isdigit():
                return
            self.queue("registration_clerk", "patient.update", "patient", patient["id"],
                       {field: value}, base={field: patient.get(field)},
                       base_version=patient["version"])

        @rule(data=st.data(), role=st.sampled_from(ROLES[:3]))
        def start_visit(self, data, role):
            patients = self.known(role, "patient")
            if patients:
                patient = data.draw(st.sampled_from(patients))
                self.create(role, "visit.start", "visit", {
                    "patient_id": patient["id"], "clinic_id": self.clinic_id, "station": "triage"})

        @rule(data=st.data(), role=st.sampled_from(ROLES[1:3]),
              station=st.sampled_from(("consultation", "lab", "pharmacy", "done")))
        def move_visit(self, data, role, station):
            visits = [v for v in self.known(role, "visit") if "_own" not in v]
            if visits:
                visit = data.draw(st.sampled_from(visits))
                self.queue(role, "visit.move", "visit", visit["id"], {"station": station},
                           base_version=visit["version"])

        @rule(data=st.data(), role=st.sampled_from(ROLES[1:3]), value=st.integers(40, 180))
        def record_vitals(self, data, role, value):
            patients = self.known(role, "patient")
            if patients:
                patient = data.draw(st.sampled_from(patients))
                self.create(role, "observation.record", "observation", {
                    "patient_id": patient["id"], "code": "8867-4", "value": value,
                    "unit": "/min", "effective_at": utcnow().isoformat()})

        @rule(data=st.data(), role=st.sampled_from(ROLES[:2]))
        def identifiers(self, data, role):
            patients = self.known(role, "patient")
            active = [i for i in self.known(role, "patient_identifier", active=True)]
            if active and data.draw(st.booleans()):
                identifier = data.draw(st.sampled_from(active))
                self.queue(role, "patient.identifier.retire", "patient_identifier",
                           identifier["id"], {"reason": "typed wrongly"},
                           base_version=identifier["version"])
            elif patients:
                patient = data.draw(st.sampled_from(patients))
                self.create(role, "patient.identifier.add", "patient_identifier", {
                    "patient_id": patient["id"], "system": "insurance",
                    "value": f"INS-{next(serial)}"})

        @rule(data=st.data())
        def diagnose(self, data):
            active = self.known("clinician", "condition", clinical_status="active")
            patients = self.known("clinician", "patient")
            if active and data.draw(st.booleans()):
                condition = data.draw(st.sampled_from(active))
                self.queue("clinician", "condition.resolve", "condition", condition["id"], {},
                           base_version=condition["version"])
            elif patients:
                patient = data.draw(st.sampled_from(patients))
                self.create("clinician", "condition.add", "condition", {
                    "patient_id": patient["id"], "text": "Malaria", "code": "B54"})

        @rule(data=st.data(), role=st.sampled_from(ROLES[1:3]),
              step=st.sampled_from(("write", "edit", "sign", "amend")))
        def notes(self, data, role, step):
            mine = self.known(role, "note", created_by=user_ids[role])
            drafts = [n for n in mine if n.get("status") == "draft"]
            signed = [n for n in self.known(role, "note", status="signed")]
            patients = self.known(role, "patient")
            if step == "edit" and drafts:
                note = data.draw(st.sampled_from(drafts))
                self.queue(role, "note.edit", "note", note["id"], {"text": f"Edited {next(serial)}"},
                           base={"text": note["text"]}, base_version=note["version"])
            elif step == "sign" and drafts:
                note = data.draw(st.sampled_from(drafts))
                self.queue(role, "note.sign", "note", note["id"], {}, base_version=note["version"])
            elif step == "amend" and signed:
                note = data.draw(st.sampled_from(signed))
                self.create(role, "note.amend", "note_addendum",
                            {"note_id": note["id"], "text": "Also: fever."})
            elif patients:
                patient = data.draw(st.sampled_from(patients))
                self.create(role, "note.write", "note",
                            {"patient_id": patient["id"], "text": "Seen today."})

        @rule(data=st.data(), quantity=st.integers(1, 6))
        def medicines(self, data, quantity):
            orders = self.known("pharmacist", "medication_request", status="active")
            patients = self.known("clinician", "patient")
            if orders and data.draw(st.booleans()):
                order = data.draw(st.sampled_from(orders))
                self.create("pharmacist", "medication.dispense", "medication_dispense",
                            {"request_id": order["id"], "quantity": quantity})
            elif patients:
                patient = data.draw(st.sampled_from(patients))
                self.create("clinician", "medication.order", "medication_request", {
                    "patient_id": patient["id"], "medication": "Paracetamol", "dose": "500 mg",
                    "route": "oral", "frequency": "daily", "quantity": 8})

        @rule(data=st.data(), hours=st.integers(0, 2))
        def appointments_and_consent(self, data, hours):
            patients = self.known("registration_clerk", "patient")
            booked = self.known("registration_clerk", "appointment", status="booked")
            choice = data.draw(st.sampled_from(("book", "cancel", "consent")))
            if choice == "cancel" and booked:
                appointment = data.draw(st.sampled_from(booked))
                self.queue("registration_clerk", "appointment.cancel", "appointment",
                           appointment["id"], {"reason": "Better"},
                           base_version=appointment["version"])
            elif patients:
                patient = data.draw(st.sampled_from(patients))
                if choice == "book":
                    when = (SLOT + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")
                    self.create("registration_clerk", "appointment.book", "appointment", {
                        "patient_id": patient["id"], "clinic_id": self.clinic_id,
                        "starts_at": when})
                else:
                    self.create("registration_clerk", "consent.record", "consent", {
                        "patient_id": patient["id"], "scope": "treatment",
                        "signer_name": "Ama Mensah", "signer_relation": "self",
                        "signature_png": SIGNATURE})

        # The network and the server ------------------------------------------------------
        @rule(role=st.sampled_from(ROLES), fault=st.sampled_from(FAULTS),
              batch=st.sampled_from((1, 3, 50)))
        def push(self, role, fault, batch):
            self.networks[role].fault = fault
            try:
                self.devices[role].push(batch_size=batch)
            except SyncFailed:
                pass

        @rule(role=st.sampled_from(ROLES), fault=st.sampled_from(FAULTS),
              limit=st.sampled_from((2, 1000)))
        def pull(self, role, fault, limit):
            self.networks[role].fault = fault
            try:
                self.devices[role].pull(limit=limit)
            except SyncFailed:
                pass

        @rule(role=st.sampled_from(ROLES), index=st.integers(0, 7))
        def late_delivery(self, role, index):
            self.networks[role].deliver_late(index)

        @precondition(lambda self: hasattr(self, "devices"))
        @rule()
        def restart_server(self):
            server.restart()

        # What must hold at every step -----------------------------------------------------
        @invariant()
        def each_devices_order_is_kept(self):
            if not hasattr(self, "devices"):
                return
            db.session.rollback()
            for device in self.devices.values():
                row = db.session.get(SyncClient, device.client_id)
                if row is None:
                    continue
                seqs = db.session.execute(select(MutationResult.seq).where(
                    MutationResult.client_id == device.client_id)
                    .order_by(MutationResult.seq)).scalars().all()
                assert seqs == list(range(1, row.last_seq + 1)), "a seq was skipped or doubled"
                applied_order = db.session.execute(select(ChangeLog.origin_seq).where(
                    ChangeLog.origin_client_id == device.client_id)
                    .order_by(ChangeLog.seq)).scalars().all()
                assert applied_order == sorted(applied_order), "applied out of the device's order"
            db.session.rollback()  # on SQLite an open transaction here would block the server

        def teardown(self):
            if hasattr(self, "devices"):
                self.clean_sync_and_compare()

        def clean_sync_and_compare(self):
            for network in self.networks.values():
                network.fault = "none"
            for _ in range(2):  # the second round brings what others pushed after my pull
                for device in self.devices.values():
                    device.push()
                for device in self.devices.values():
                    device.pull()
            db.session.rollback()
            for role, device in self.devices.items():
                assert device.store.outbox == []
                answered = {**device.store.results,
                            **{q["mutation"]["mid"]: {"status": "rejected"}
                               for q in device.store.quarantine}}
                assert set(self.queued[role]) == set(answered), "a mutation was lost"
                stored = {r.mid: r for r in db.session.execute(select(MutationResult).where(
                    MutationResult.mid.in_(self.queued[role]))).scalars()}
                for mid in self.queued[role]:
                    assert mid in stored, "an answered mutation is not on the server"
                    assert stored[mid].client_id == device.client_id
                    got = answered[mid]["status"]
                    want = stored[mid].status
                    assert got == want or (got == "duplicate" and want != "rejected"), \
                        f"{mid}: the device was told {got}, the server holds {want}"
                for quarantined in device.store.quarantine:
                    mutation = quarantined["mutation"]
                    model = ENTITY_MODELS[mutation["entity"]]
                    row = db.session.get(model, mutation["entity_id"])
                    assert row is None or mutation["type"].split(".")[-1] not in (
                        "register", "start", "record", "add", "write", "amend", "order",
                        "dispense", "book"), "a rejected create left a record behind"
                # A device that synced incrementally holds exactly what a fresh one gets.
                db.session.rollback()
                fresh = Device(self.networks[role], client_id=f"fresh-{new_id()[-16:]}")
                fresh.pull()
                assert device.store.rows == fresh.store.rows, f"{role}'s copy diverged"
                for (entity, entity_id), record in fresh.store.rows.items():
                    if entity in ("patient", "patient_identifier"):
                        continue  # shown per role (identifiers filtered); checked elsewhere
                    server_row = db.session.get(ENTITY_MODELS[entity], entity_id)
                    assert server_row.to_record() == record
                db.session.rollback()

    run_state_machine_as_test(Clinic, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=50, deadline=None, derandomize=True,
        database=None, suppress_health_check=list(HealthCheck)))
