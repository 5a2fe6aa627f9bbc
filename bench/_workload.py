"""Fixed, seeded work for the push benchmark: the peer's observation documents (shared
peers/gen_data.py, imported) as observation.record mutations, and patient.update mutations.

Both sides get the same documents: the peer pushes the gen_data rows as CouchDB documents,
the app gets each row as one observation.record (patient_id, encounter_id -> visit_id, code,
value, unit, recorded_at -> effective_at; the row's uuid is the observation's id). Fields the
mutation schema has no place for (display, status, author, note) stay on the peer's side only.
"""
from __future__ import annotations

import json
import random
import uuid

from _paths import peers_import

gen_data = peers_import("gen_data")

SEED = 20240601  # gen_data's own default seed
NS = uuid.UUID("6f1d3c1e-6b1a-4c55-9d0e-62756e636821")  # namespace of derived ids


def obs_rows(n: int) -> list[dict]:
    """The first n of gen_data's rows (made for at least n, so patients are shared)."""
    return gen_data.make(n)


def derived(*parts) -> str:
    return str(uuid.uuid5(NS, "/".join(str(p) for p in parts)))


def update_patients(n: int) -> list[dict]:
    """n patients whose phones the update workload changes (seeded)."""
    rnd = random.Random(SEED + 1)
    given = ["Ama", "Kofi", "Wanjiru", "Otieno", "Chipo", "Tendai", "Amina", "Juma", "Zawadi"]
    family = ["Owusu", "Mensah", "Kamau", "Ochieng", "Moyo", "Dube", "Hassan", "Mwangi"]
    out = []
    for i in range(n):
        out.append({"id": str(uuid.UUID(int=rnd.getrandbits(128), version=4)),
                    "given_name": rnd.choice(given), "family_name": rnd.choice(family),
                    "sex": rnd.choice(["female", "male"]),
                    "birth_date": f"{rnd.randrange(1940, 2020)}-{rnd.randrange(1, 13):02d}-"
                                  f"{rnd.randrange(1, 29):02d}",
                    "phone": f"+254 700 {i:06d}"})
    return out


def registrations(rows: list[dict], patients: list[dict], clinic_id: str) -> list[tuple]:
    """(type, entity, entity_id, data) creating every patient and visit the work refers to."""
    out = []
    seen = {}
    for row in rows:
        seen.setdefault(row["patient_id"], row["encounter_id"])
    for pid, visit_id in seen.items():
        out.append(("patient.register", "patient", pid, {
            "given_name": "Obs", "family_name": pid[:8], "sex": "unknown",
            "birth_date": "1980-01-01", "clinic_id": clinic_id}))
        out.append(("visit.start", "visit", visit_id, {
            "patient_id": pid, "clinic_id": clinic_id, "station": "triage"}))
    for p in patients:
        out.append(("patient.register", "patient", p["id"], {
            **{k: p[k] for k in ("given_name", "family_name", "sex", "birth_date", "phone")},
            "clinic_id": clinic_id}))
    return out


def obs_mutation(row: dict, tag: str) -> tuple:
    oid = row["id"] if tag is None else derived("obs", tag, row["id"])
    return ("observation.record", "observation", oid, {
        "patient_id": row["patient_id"], "visit_id": row["encounter_id"], "code": row["code"],
        "value": row["value"], "unit": row["unit"], "effective_at": row["recorded_at"]},
        None, None, row["recorded_at"])


class PatientState:
    """What the device knows of each update patient: phone and version (the merge base)."""

    def __init__(self, patients: list[dict]):
        self.phone = {p["id"]: p["phone"] for p in patients}
        self.version = {p["id"]: 1 for p in patients}
        self.counter = 0

    def update(self, pid: str) -> tuple:
        self.counter += 1
        new = f"+254 711 {self.counter:06d}"
        mutation = ("patient.update", "patient", pid, {"phone": new},
                    {"phone": self.phone[pid]}, self.version[pid], None)
        self.phone[pid] = new
        self.version[pid] += 1
        return mutation


def wire(mutations: list[tuple], client_tag: str, first_seq: int = 1) -> list[dict]:
    out = []
    for i, (mtype, entity, entity_id, data, base, base_version, client_ts) in enumerate(mutations):
        body = {"mid": derived("mid", client_tag, entity_id, i), "seq": first_seq + i,
                "type": mtype, "entity": entity, "entity_id": entity_id, "data": data}
        if base is not None:
            body["base"] = base
        if base_version is not None:
            body["base_version"] = base_version
        if client_ts is not None:
            body["client_ts"] = client_ts
        out.append(body)
    return out


def bodies(client_id: str, mutations: list[dict], batch: int) -> list[bytes]:
    """The push requests of one run, encoded before the clock starts."""
    return [json.dumps({"protocol": 1, "client_id": client_id,
                        "mutations": mutations[i:i + batch]}, separators=(",", ":")).encode()
            for i in range(0, len(mutations), batch)]


def as_tuple(m) -> tuple:
    """Setup registrations as the 7-tuple wire() takes."""
    mtype, entity, entity_id, data = m
    return (mtype, entity, entity_id, data, None, None, None)
