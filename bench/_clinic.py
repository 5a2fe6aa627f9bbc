"""A seeded clinic for the browser benchmarks, made once and cached between runs.

The database is made the way the app makes demo data: `flask db upgrade`, then
`flask demo seed --patients 0` (the demo organization: two clinics, a user per role in each,
with their passwords and TOTP secrets), then the clinic's patients, visits and observations
written in this process through `app.services.apply.apply()`, the one write path of the app
(validation, handlers, field encryption, entity history, change log, stored result), with an
audit entry per mutation as `flask demo seed` writes them. Nothing is inserted around apply().
`flask demo seed --patients N` itself cannot be used: it splits patients over both clinics and
draws a random history per patient (about 13 observations each, with notes, diagnoses and
medications), so it cannot give 5,000 patients with exactly 100,000 observations.

The seeded files (clinic.db, audit.db) and a manifest (users, sizes, seconds it took, and the
exact changes a device of the clinic pulls, from an in-process pull on a throwaway copy) are
kept under CACHE/<key>/; a later run with the same sizes copies them instead of seeding again.
"""
from __future__ import annotations

import hashlib
import json
import random
import shutil
import sqlite3
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

from _backends import SQLiteBackend, flask_cli
from _ceiling import dispose, make_app

SEED_VERSION = 1  # bump when what a spec produces changes: old caches are then ignored
SEED = 20261123


@dataclass(frozen=True)
class Spec:
    """What the clinic (the first demo clinic, Riverside) holds."""
    patients: int            # ordinary patients
    observations: int        # spread evenly over the ordinary patients' visits
    visits: int              # past visits of each patient that has any
    visit_every: int         # every n-th patient has visits (1: all)
    chart_obs: int = 0       # one more patient ("Chart Benchmark") with this many observations
    chart_visits: int = 20   # ... over this many visits

    def key(self) -> str:
        text = json.dumps({**asdict(self), "v": SEED_VERSION}, sort_keys=True)
        return (f"p{self.patients}-o{self.observations}-c{self.chart_obs}-"
                + hashlib.sha256(text.encode()).hexdigest()[:10])


def _urls(folder: Path) -> tuple[str, str]:
    return (f"sqlite:///{folder / 'clinic.db'}", f"sqlite:///{folder / 'audit.db'}")


def _checkpoint(folder: Path) -> None:
    for name in ("clinic.db", "audit.db"):
        con = sqlite3.connect(folder / name)
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        con.close()


# Vital sign codes (app/domain/vitals.py) with ranges inside what the app accepts.
VITAL_READINGS = (("8867-4", "/min", 55, 120, 0), ("9279-1", "/min", 12, 28, 0),
                  ("8310-5", "Cel", 36.0, 39.0, 1), ("59408-5", "%", 90, 100, 0),
                  ("8480-6", "mm[Hg]", 95, 170, 0), ("8462-4", "mm[Hg]", 55, 105, 0),
                  ("29463-7", "kg", 40.0, 110.0, 1), ("8302-2", "cm", 140.0, 195.0, 1))


class Seeder:
    """Writes mutations through apply() as the demo users, committing in chunks."""

    COMMIT_EVERY = 2000

    def __init__(self, app, log):
        from sqlalchemy import select
        from app.extensions import db
        from app.models import Clinic, Membership, User
        self.app, self.log = app, log
        rows = db.session.execute(select(User, Membership, Clinic)
                                  .join(Membership, Membership.user_id == User.id)
                                  .join(Clinic, Clinic.id == Membership.clinic_id)).all()
        riv = next(c for _, _, c in rows if c.code == "RIV")
        # Plain values: the session is emptied after every commit.
        self.clinic = SimpleNamespace(id=riv.id, code=riv.code, name=riv.name)
        self.users = {m.role: SimpleNamespace(id=u.id, username=u.username,
                                              organization_id=u.organization_id)
                      for u, m, c in rows if c.id == riv.id}
        self.stored: dict = {}  # the batch lookup a push uses (apply's stored_by_mid)
        self.pending = 0
        self.entries = []
        self.count = 0
        self.t0 = time.monotonic()

    def write(self, role: str, type_name: str, entity: str, data: dict,
              entity_id: str | None = None, base_version: int | None = None):
        from app.domain.ids import new_id
        from app.services import audit
        from app.services.actor import Actor
        from app.services.apply import apply
        from app.services.results import Mutation
        user = self.users[role]
        actor = Actor(user_id=user.id, username=user.username, organization_id=user.organization_id,
                      clinic_id=self.clinic.id, roles=frozenset({role}))
        mutation = Mutation(mid=new_id(), type=type_name, entity=entity,
                            entity_id=entity_id or new_id(), data=data, base_version=base_version)
        result = apply(mutation, actor, source="seed", stored_by_mid=self.stored)
        if result.status != "applied":
            raise RuntimeError(f"seed write {type_name} was {result.status}: {result.error}")
        self.entries.append(audit.AuditEntry(
            action=f"mutation.{type_name}", user_id=user.id, username=user.username, role=role,
            clinic_id=self.clinic.id, patient_id=data.get("patient_id") or (
                mutation.entity_id if entity == "patient" else None),
            detail={"mid": mutation.mid, "source": "bench seed"}))
        self.pending += 1
        self.count += 1
        return result

    def maybe_commit(self, force: bool = False, total: int = 0):
        from app.extensions import db
        from app.services import audit
        if not force and self.pending < self.COMMIT_EVERY:
            return
        audit.append(self.entries)
        db.session.commit()
        db.session.expunge_all()  # keep the identity map small over 100k+ writes
        self.entries, self.pending = [], 0
        self.stored.clear()
        took = time.monotonic() - self.t0
        self.log(f"  seeded {self.count:,}/{total:,} mutations ({self.count / took:,.0f}/s)")


def _plan(spec: Spec) -> int:
    """How many mutations the spec needs (for progress)."""
    with_visits = (spec.patients + spec.visit_every - 1) // spec.visit_every if spec.visits else 0
    n = spec.patients + with_visits * spec.visits * 2 + spec.observations
    if spec.chart_obs:
        n += 1 + spec.chart_visits * 2 + spec.chart_obs
    return n


def _seed(app, spec: Spec, log) -> dict:
    from app.demo.names import FAMILY_NAMES, FEMALE_NAMES, MALE_NAMES, VILLAGES
    from app.domain import roles as r
    from app.models.records import to_json_value
    rng = random.Random(SEED)
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    total = _plan(spec)
    w = Seeder(app, log)
    clinic = w.clinic
    log(f"seeding clinic {clinic.name}: {total:,} mutations through apply()")

    def visit_with_obs(pid: str, n_obs: int, day: int):
        at = now - timedelta(days=day, minutes=rng.randrange(0, 600))
        visit = w.write(r.REGISTRATION_CLERK, "visit.start", "visit", {
            "patient_id": pid, "clinic_id": clinic.id, "station": "triage",
            "reason": rng.choice(["Fever", "Cough", "Headache", "Follow-up", "Check-up"])})
        for k in range(n_obs):
            code, unit, lo, hi, digits = VITAL_READINGS[k % len(VITAL_READINGS)]
            value = round(rng.uniform(lo, hi), digits) if digits else rng.randrange(int(lo), int(hi) + 1)
            w.write(r.NURSE, "observation.record", "observation", {
                "patient_id": pid, "visit_id": visit.entity_id, "code": code, "value": value,
                "unit": unit, "effective_at": to_json_value(at + timedelta(minutes=k // len(VITAL_READINGS)))})
        w.write(r.REGISTRATION_CLERK, "visit.move", "visit", {"station": "done"},
                entity_id=visit.entity_id, base_version=visit.version)

    def register(n: int, given: str | None = None, family: str | None = None) -> str:
        sex = rng.choice(["female", "male"])
        result = w.write(r.REGISTRATION_CLERK, "patient.register", "patient", {
            "given_name": given or rng.choice(FEMALE_NAMES if sex == "female" else MALE_NAMES),
            "family_name": family or rng.choice(FAMILY_NAMES), "sex": sex,
            "birth_date": (datetime(1940, 1, 1) + timedelta(days=rng.randrange(0, 365 * 84))).date().isoformat(),
            "clinic_id": clinic.id,
            "phone": f"07{rng.randrange(10, 99)} {rng.randrange(100, 999)} {rng.randrange(100, 999)}",
            "address": f"{rng.choice(VILLAGES)}, plot {rng.randrange(1, 400)}",
            "identifiers": [{"system": "mrn", "value": f"{clinic.code}-{100000 + n}"}],
        })
        return result.entity_id

    chart_id = None
    if spec.chart_obs:
        chart_id = register(0, "Chart", "Benchmark")
        per = [spec.chart_obs // spec.chart_visits + (1 if v < spec.chart_obs % spec.chart_visits else 0)
               for v in range(spec.chart_visits)]
        for v, n_obs in enumerate(per):
            visit_with_obs(chart_id, n_obs, 10 + v * 17)
    with_visits = [i for i in range(spec.patients) if spec.visits and i % spec.visit_every == 0]
    obs_slots = len(with_visits) * spec.visits
    base, extra = divmod(spec.observations, obs_slots) if obs_slots else (0, 0)
    slot = 0
    for i in range(spec.patients):
        pid = register(i + 1)
        if spec.visits and i % spec.visit_every == 0:
            for v in range(spec.visits):
                visit_with_obs(pid, base + (1 if slot < extra else 0), rng.randrange(1, 360))
                slot += 1
        w.maybe_commit(total=total)
    w.maybe_commit(force=True, total=total)
    return {"clinic_id": clinic.id, "clinic": clinic.name, "chart_patient_id": chart_id,
            "mutations": w.count, "seed_seconds": round(time.monotonic() - w.t0, 1)}


def _export_pull(folder: Path, username: str, log) -> list[dict]:
    """Every change a device of `username` pulls on its first sync, as the pull endpoint sends
    them (in-process test client, bearer token), on a throwaway copy of the seeded files."""
    copy = folder.parent / (folder.name + ".export")
    shutil.rmtree(copy, ignore_errors=True)
    copy.mkdir()
    for name in ("clinic.db", "audit.db"):
        shutil.copyfile(folder / name, copy / name)
    urls = _urls(copy)
    token = flask_cli(urls, "tokens", "create", username, "--name", "bench-export").strip()
    app = make_app(SQLiteBackend, urls)
    changes: list[dict] = []
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        cursor, client_id = None, "00000000-0000-4000-8000-0000000e4907"
        for _ in range(100_000):
            resp = client.post("/sync/v1/pull", headers=headers, data=json.dumps(
                {"protocol": 1, "client_id": client_id, "cursor": cursor, "limit": 1000}))
            if resp.status_code != 200:
                raise RuntimeError(f"export pull answered {resp.status_code}: {resp.get_data()[:300]!r}")
            body = resp.get_json()
            changes += body["changes"]
            cursor = body["cursor"]
            if not body["has_more"]:
                break
    finally:
        dispose(app)
        shutil.rmtree(copy, ignore_errors=True)
    log(f"  a device of {username} pulls {len(changes):,} changes")
    return changes


def prepare(cache: Path, spec: Spec, target: Path, log) -> dict:
    """Copy the seeded clinic for `spec` into `target` (made once under `cache`); returns the
    manifest: users, clinic, sizes and `changes_file` (the JSON of the changes pulled)."""
    home = cache / spec.key()
    manifest_path = home / "manifest.json"
    if not manifest_path.exists():
        shutil.rmtree(home, ignore_errors=True)
        home.mkdir(parents=True)
        building = home / "db"
        building.mkdir()
        urls = _urls(building)
        t0 = time.monotonic()
        log(f"making the seeded clinic {spec.key()} in {home} (once; later runs reuse it)")
        flask_cli(urls, "db", "upgrade")
        users = json.loads(flask_cli(urls, "demo", "seed", "--patients", "0", "--json"))
        app = make_app(SQLiteBackend, urls)
        try:
            with app.app_context():
                seeded = _seed(app, spec, log)
        finally:
            dispose(app)
        _checkpoint(building)
        nurse = next(u for u in users if u["role"] == "nurse" and u["clinic_id"] == seeded["clinic_id"])
        changes = _export_pull(building, nurse["username"], log)
        (home / "changes.json").write_text(json.dumps(changes, separators=(",", ":")))
        counts = {}
        for c in changes:
            counts[c["entity"]] = counts.get(c["entity"], 0) + 1
        manifest = {"spec": asdict(spec), "users": users, **seeded, "nurse": nurse["username"],
                    "changes": len(changes), "changes_by_entity": counts,
                    "build_seconds": round(time.monotonic() - t0, 1),
                    "made_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "python": sys.version.split()[0]}
        manifest_path.write_text(json.dumps(manifest, indent=1))
        log(f"seeded clinic ready in {manifest['build_seconds']:.0f} s")
    manifest = json.loads(manifest_path.read_text())
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in ("clinic.db", "audit.db"):
        shutil.copyfile(home / "db" / name, target / name)
    flask_cli(_urls(target), "db", "upgrade")  # a clinic cached before a migration gets it too
    manifest["urls"] = _urls(target)
    manifest["changes_file"] = str(home / "changes.json")
    manifest["cache_dir"] = str(home)
    return manifest
