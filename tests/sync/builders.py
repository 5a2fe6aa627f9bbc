"""Mutation data for sync tests: valid by default, so a test changes only what it is about."""
from __future__ import annotations

from app.domain.ids import new_id

VITAL_TIME = "2026-11-21T09:30:00Z"


def register(client, clinic_id: str, patient_id: str | None = None, **fields) -> str:
    patient_id = patient_id or new_id()
    client.queue("patient.register", "patient", patient_id, {
        "given_name": "Ama", "family_name": "Owusu", "sex": "female",
        "birth_date": "1990-01-02", "clinic_id": clinic_id, **fields})
    return patient_id


def observe(client, patient_id: str, value=72, code: str = "8867-4", unit: str = "/min",
            observation_id: str | None = None, **fields) -> str:
    observation_id = observation_id or new_id()
    client.queue("observation.record", "observation", observation_id, {
        "patient_id": patient_id, "code": code, "value": value, "unit": unit,
        "effective_at": VITAL_TIME, **fields})
    return observation_id


def wire(mid: str, seq: int, type_name: str, entity: str, entity_id: str, data: dict,
         **envelope) -> dict:
    return {"mid": mid, "seq": seq, "type": type_name, "entity": entity, "entity_id": entity_id,
            "data": data, **envelope}


def push_body(client_id: str, *mutations: dict) -> dict:
    return {"protocol": 1, "client_id": client_id, "mutations": list(mutations)}
