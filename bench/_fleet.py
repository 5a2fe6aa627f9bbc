"""A fleet of devices for the peak benchmark, fixed by a seed: two clinics' staff, each with
a tablet of their own (own user, own bearer token bound to the clinic it works at, own
client_id), the patients and open visits they chart, and the work each device sends.

The work is what a ward round produces: 20 mutations per device, vital signs
(`observation.record`, sets of five readings on open visits of
patients of its clinic drawn at random, so two devices sometimes chart one patient) and a few phone corrections
(`patient.update` with `base` and `base_version`, each device on patients of its own, so no
two devices edit one record). Devices send it in the batches the worker makes: a tablet back
online flushes its whole outbox at once (one push of 20); one in use syncs after each saved
form (pushes of 5, a vitals set); one saving readings one at a time sends them one by one.
Each push is followed by a pull, as the worker's sync does.
"""
from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field

import _workload as W

SEED = 20261124
CLINIC_SHARE = (0.6, 0.4)          # devices at the first and second demo clinic
ROLE_MIX = (("nurse", 0.65), ("clinician", 0.35))
BATCH_MIX = ((20, 0.4), (5, 0.4), (1, 0.2))   # mutations per push: reconnecting, in use, live
UPDATES_PER_DEVICE = 2
VITALS = (("8867-4", "/min", 55, 120), ("9279-1", "/min", 12, 28), ("59408-5", "%", 90, 100),
          ("8480-6", "mm[Hg]", 95, 170), ("8462-4", "mm[Hg]", 55, 105))


@dataclass
class Device:
    index: int
    clinic: str                 # clinic code
    role: str
    username: str
    client_id: str
    batch: int
    mutations: list[dict] = field(default_factory=list)   # wire form, seq 1..n
    token: str = ""
    cursor: str | None = None
    also_member_of: str | None = None  # a second clinic this person works at

    def pushes(self) -> list[list[dict]]:
        return [self.mutations[i:i + self.batch] for i in range(0, len(self.mutations), self.batch)]


@dataclass
class ClinicFixture:
    code: str
    clinic_id: str = ""
    patients: list[dict] = field(default_factory=list)   # {id, given_name, ..., phone, visit_id}


def _pick(rng, mix):
    x, acc = rng.random(), 0.0
    for value, share in mix:
        acc += share
        if x < acc:
            return value
    return mix[-1][0]


def plan(n_devices: int, per_device: int, clinic_codes: list[str], extra_patients: int = 10,
         readings_per_patient: int = len(VITALS)) -> tuple[
        list[Device], dict[str, ClinicFixture]]:
    rng = random.Random(SEED)
    devices: list[Device] = []
    for i in range(n_devices):
        clinic = clinic_codes[0] if i < round(n_devices * CLINIC_SHARE[0]) else clinic_codes[1]
        role = _pick(rng, ROLE_MIX)
        devices.append(Device(index=i, clinic=clinic, role=role,
                              username=f"{role}.{clinic.lower()}.{i:03d}",
                              client_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                              batch=_pick(rng, BATCH_MIX),
                              also_member_of=(clinic_codes[1] if clinic == clinic_codes[0]
                                              else clinic_codes[0]) if i % 10 == 7 else None))
    fixtures = {}
    for code in clinic_codes:
        mine = [d for d in devices if d.clinic == code]
        n_patients = UPDATES_PER_DEVICE * len(mine) + extra_patients
        fx = ClinicFixture(code)
        for k in range(n_patients):
            pid = W.derived("peak-patient", code, k)
            fx.patients.append({"id": pid, "given_name": rng.choice(["Ama", "Kofi", "Amina", "Juma"]),
                                "family_name": f"Peak{code}{k:04d}", "sex": rng.choice(["female", "male"]),
                                "birth_date": f"{rng.randrange(1940, 2020)}-{rng.randrange(1, 13):02d}-"
                                              f"{rng.randrange(1, 29):02d}",
                                "phone": f"+254 722 {k:06d}", "visit_id": W.derived("peak-visit", code, k)})
        fixtures[code] = fx
        for j, d in enumerate(mine):
            own = fx.patients[UPDATES_PER_DEVICE * j:UPDATES_PER_DEVICE * (j + 1)]
            updates_at = {per_device // 4 + u * per_device // 2: p for u, p in enumerate(own)}
            # A round: vitals sets of five readings, each set for one patient of the clinic.
            round_patients = [rng.choice(fx.patients) for _ in range(per_device // readings_per_patient + 1)]
            work = []
            for s in range(per_device):
                if s in updates_at:
                    p = updates_at[s]
                    work.append(("patient.update", "patient", p["id"],
                                 {"phone": f"+254 733 {d.index:03d}{s:03d}"},
                                 {"phone": p["phone"]}, 1, None))
                else:
                    p = round_patients[s // readings_per_patient]
                    code_, unit, lo, hi = VITALS[s % len(VITALS)]
                    at = f"2026-01-15T08:{s:02d}:00Z"
                    work.append(("observation.record", "observation",
                                 W.derived("peak-obs", d.client_id, s),
                                 {"patient_id": p["id"], "visit_id": p["visit_id"], "code": code_,
                                  "value": rng.randrange(lo, hi + 1), "unit": unit, "effective_at": at},
                                 None, None, at))
            d.mutations = W.wire(work, d.client_id)
    return devices, fixtures


def registrations(fx: ClinicFixture) -> list[tuple]:
    """The clinic's patients, each with an open visit and one earlier reading."""
    out = []
    for k, p in enumerate(fx.patients):
        out.append(("patient.register", "patient", p["id"], {
            **{f: p[f] for f in ("given_name", "family_name", "sex", "birth_date", "phone")},
            "clinic_id": fx.clinic_id}, None, None, None))
        out.append(("visit.start", "visit", p["visit_id"], {
            "patient_id": p["id"], "clinic_id": fx.clinic_id, "station": "triage"}, None, None, None))
        out.append(("observation.record", "observation", W.derived("peak-first-obs", p["id"]), {
            "patient_id": p["id"], "visit_id": p["visit_id"], "code": "8310-5",
            "value": 36.5 + (k % 20) / 10, "unit": "Cel", "effective_at": "2026-01-15T07:30:00Z"},
            None, None, None))
    return out


def telemetry(device: Device, pending: int) -> dict:
    """What the worker sends with each push and pull (static/sw/sync.js telemetry())."""
    return {"queue_depth": pending, "oldest_pending_at": "2026-01-15T08:00:00Z" if pending else None,
            "quarantine_count": 0, "worker_version": "bench", "app_version": "bench",
            "storage_used": 2_000_000 + device.index, "storage_quota": 10_000_000_000,
            "storage_persisted": True}
