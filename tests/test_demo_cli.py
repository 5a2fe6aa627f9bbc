"""`flask demo seed`: the demo organization as a contract other tools rely on."""
from __future__ import annotations

import json

import pyotp
from sqlalchemy import func, select

from app.domain.roles import ROLES
from app.extensions import db
from app.models import (Appointment, Clinic, Condition, MedicationRequest, Note, Observation,
                        Patient, Visit)
from app.services.audit import verify


def test_seed_json_lists_a_user_per_role_in_two_clinics(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["demo", "seed", "--patients", "6", "--json"])
    assert result.exit_code == 0, result.output
    users = json.loads(result.stdout)
    assert {tuple(sorted(u)) for u in users} == {
        ("clinic", "clinic_id", "password", "role", "totp_secret", "username")}
    clinics = {u["clinic_id"] for u in users}
    assert len(clinics) == 2
    for clinic_id in clinics:
        assert sorted(u["role"] for u in users if u["clinic_id"] == clinic_id) == sorted(ROLES)
    assert all(len(pyotp.TOTP(u["totp_secret"]).now()) == 6 for u in users)

    count = lambda model: db.session.scalar(select(func.count()).select_from(model))
    assert count(Patient) == 6 and count(Clinic) == 2
    for model in (Visit, Observation, Note):
        assert count(model) > 0, model.__name__
    assert count(Condition) + count(MedicationRequest) + count(Appointment) > 0
    assert verify().ok  # the demo's writes were audited like any other

    again = runner.invoke(args=["demo", "seed", "--patients", "6", "--json"])
    assert json.loads(again.stdout) == users
    assert count(Patient) == 6


def test_demo_passwords_sign_in(app):
    users = json.loads(app.test_cli_runner().invoke(args=["demo", "seed", "--patients", "0", "--json"]).stdout)
    nurse = next(u for u in users if u["role"] == "nurse")
    client = app.test_client()
    answer = client.post("/login", data={"username": nurse["username"], "password": nurse["password"]})
    assert answer.status_code == 302 and answer.headers["Location"] == "/login/code"
    answer = client.post("/login/code", data={"code": pyotp.TOTP(nurse["totp_secret"]).now()})
    assert answer.status_code == 302
    assert "Triage" in client.get("/worklist/triage").text


def test_seed_is_refused_in_production(app):
    app.config["APP_ENV"] = "production"
    result = app.test_cli_runner().invoke(args=["demo", "seed", "--json"])
    assert result.exit_code != 0
    assert "refused in production" in result.output
    assert db.session.scalar(select(func.count()).select_from(Patient)) == 0
