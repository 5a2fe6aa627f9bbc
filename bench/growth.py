#!/usr/bin/env python3
"""Growth: what push and pull cost with 1x and 10x the data already on the server, on SQLite
and on PostgreSQL, and whether the cost per row stays flat.

    nice -n 10 .venv/bin/python bench/growth.py            # 500/5,000 patients, 3 reps: ~15 min
                                                            # (+ seeding once, cached)
    nice -n 10 .venv/bin/python bench/growth.py --quick    # 50/500 patients, 1 rep: ~3 min

Each size is a clinic seeded through apply() (bench/_clinic.py, cached), copied into
PostgreSQL row for row (bench/_pgcopy.py). On each, the app served as in production
(the Procfile's gunicorn line), one device at a time:
  1. a nurse's new device pulls its whole subset (pages of 500, as the worker asks);
  2. a clinician's device pushes observations (batches of 100) on the clinic's visits;
  3. the nurse's device pulls again: just those observations (incremental pull);
  4. and once more: nothing new (what a poll costs).
With --explain, the statements of steps 2-3 are timed in-process at both sizes, and those whose
time per call grew with the data are shown with their query plans. See bench/README.md.
"""
from __future__ import annotations

import argparse
import functools
import json
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

sys.dont_write_bytecode = True  # noqa: E402

import _workload as W  # noqa: E402
from _backends import PostgresBackend, SQLiteBackend, flask_cli  # noqa: E402
from _clinic import Spec, prepare  # noqa: E402
from _paths import ROOT  # noqa: E402
from _pgcopy import copy_into_postgres  # noqa: E402
from _server import Gunicorn, Pusher  # noqa: E402

T0 = time.monotonic()
PULL_PAGE = 500  # static/sw/sync.js PULL_LIMIT


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=500, help="patients at 1x (500)")
    ap.add_argument("--observations", type=int, default=10_000, help="observations at 1x (10,000)")
    ap.add_argument("--factor", type=int, default=10, help="the larger size is this many times 1x")
    ap.add_argument("--push-n", type=int, default=1000, help="observations pushed per run (1000)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="50/500 patients, 300 pushed, 1 rep")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--explain", action="store_true",
                    help="time every statement of a push and an incremental pull at both sizes "
                         "and show the plans of those that grew")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--pg-port", type=int, default=55451)
    ap.add_argument("--app-port", type=int, default=18640)
    ap.add_argument("--cache", default="/tmp/bench-peak/cache", help="seeded clinics, kept between runs")
    ap.add_argument("--work", default="/tmp/bench-peak/growth", help="scratch directory (emptied)")
    a = ap.parse_args()
    if a.quick:
        # 10x of the quick sizes is 1x of the default ones: one seeded clinic serves both
        a.patients, a.observations, a.push_n, a.reps = 50, 1_000, 300, 1
    a.backends = a.backends.split(",")
    return a


class Device:
    """One device syncing alone: sequential requests on one keep-alive connection."""

    def __init__(self, port: int, token: str):
        self.pusher = Pusher(port, token)
        self.client_id = str(uuid.uuid4())
        self.cursor = None

    def pull_all(self) -> dict:
        rows = pages = nbytes = 0
        t0 = time.perf_counter()
        while True:
            body = json.dumps({"protocol": 1, "client_id": self.client_id, "cursor": self.cursor,
                               "limit": PULL_PAGE}).encode()
            status, data = self.pusher.post(body, "/sync/v1/pull")
            if status != 200:
                raise RuntimeError(f"pull answered {status}: {data[:300]!r}")
            page = json.loads(data)
            rows += len(page["changes"])
            pages += 1
            nbytes += len(data)
            self.cursor = page["cursor"]
            if not page["has_more"]:
                break
        return {"seconds": time.perf_counter() - t0, "rows": rows, "pages": pages, "bytes": nbytes}

    def close(self):
        self.pusher.close()


@functools.lru_cache(maxsize=4)
def clinic_visits(changes_file: str) -> list[tuple[str, str]]:
    with open(changes_file) as f:
        return [(c["id"], c["record"]["patient_id"]) for c in json.load(f) if c["entity"] == "visit"]


def push_work(changes_file: str, n: int, tag: str) -> list[dict]:
    """n heart-rate readings on the clinic's visits, ten per visit (fixed, seeded choice)."""
    visits = clinic_visits(changes_file)
    step = max(1, len(visits) // max(1, n // 10))
    chosen = visits[::step]
    work = []
    for i in range(n):
        visit_id, patient_id = chosen[(i // 10) % len(chosen)]
        at = f"2026-01-15T{8 + i // 3600 % 10:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
        work.append(("observation.record", "observation", W.derived("growth-obs", tag, i),
                     {"patient_id": patient_id, "visit_id": visit_id, "code": "8867-4",
                      "value": 60 + i % 50, "unit": "/min", "effective_at": at}, None, None, at))
    return W.wire(work, tag)


def one_run(args, backend, base_name, tokens, changes_file, work, tag) -> dict:
    urls = backend.clone("run", source=base_name)
    if backend.name == "postgresql":
        backend.checkpoint()
    srv = Gunicorn(urls, args.app_port, work / f"gunicorn-{backend.name}.log", args.workers, args.threads)
    nurse, clinician = Device(args.app_port, tokens["nurse"]), Device(args.app_port, tokens["clinician"])
    out = {}
    try:
        warm_up(args.app_port, tokens, changes_file)
        cpu = srv.cpu_seconds()
        out["full"] = nurse.pull_all()
        out["full"]["server_cpu_s"] = srv.cpu_seconds() - cpu
        muts = push_work(changes_file, args.push_n, tag)
        bodies = W.bodies(clinician.client_id, muts, 100)
        cpu = srv.cpu_seconds()
        run = clinician.pusher.run(bodies)
        run["server_cpu_s"] = srv.cpu_seconds() - cpu
        run["ok"] = run["statuses"] == {"applied": len(muts)}
        out["push"] = run
        cpu = srv.cpu_seconds()
        out["incremental"] = nurse.pull_all()
        out["incremental"]["server_cpu_s"] = srv.cpu_seconds() - cpu
        cpu = srv.cpu_seconds()
        empties = [nurse.pull_all() for _ in range(5)]
        out["empty"] = {"seconds": statistics.median(e["seconds"] for e in empties),
                        "rows": sum(e["rows"] for e in empties),
                        "server_cpu_s": (srv.cpu_seconds() - cpu) / len(empties)}
    finally:
        nurse.close()
        clinician.close()
        srv.stop()
        backend.drop("run")
    return out


def warm_up(port, tokens, changes_file):
    """A worker's first requests pay for connections and compiled statements: a few pulls and
    pushes on new connections (so both workers get some) before anything is timed."""
    for i in range(6):
        d = Device(port, tokens["nurse"] if i % 2 else tokens["clinician"])
        try:
            if i % 2:
                status, data = d.pusher.post(json.dumps(
                    {"protocol": 1, "client_id": d.client_id, "cursor": None, "limit": 50}).encode(),
                    "/sync/v1/pull")
            else:
                body = W.bodies(d.client_id, push_work(changes_file, 1, f"warm-{d.client_id}"), 1)[0]
                status, data = d.pusher.post(body)
            if status != 200:
                raise RuntimeError(f"warm-up answered {status}: {data[:300]!r}")
        finally:
            d.close()


# --- statements and plans ------------------------------------------------------------------------

def statement_times(backend, base_name, tokens, changes_file, n, tag) -> dict:
    """Time each statement of one pushed batch and one incremental pull, in-process."""
    from sqlalchemy import event
    from _ceiling import dispose, make_app
    urls = backend.clone("explain", source=base_name)
    app = make_app(backend, urls)
    times = defaultdict(lambda: [0, 0.0, None])  # statement -> [calls, seconds, parameters]
    started = {}
    with app.app_context():
        from app.extensions import db
        engines = list(db.engines.values())

    def before(conn, cursor, statement, parameters, context, executemany):
        started[id(cursor)] = time.perf_counter()

    def after(conn, cursor, statement, parameters, context, executemany):
        t = times[statement]
        t[0] += 1
        t[1] += time.perf_counter() - started.pop(id(cursor), time.perf_counter())
        if t[2] is None and not executemany:
            t[2] = parameters
    client = app.test_client()
    try:
        nurse_id = str(uuid.uuid4())
        headers = {"Content-Type": "application/json"}
        cursor = None
        while True:  # the nurse's first sync, not timed
            page = client.post("/sync/v1/pull", headers={**headers, "Authorization": f"Bearer {tokens['nurse']}"},
                               data=json.dumps({"protocol": 1, "client_id": nurse_id, "cursor": cursor,
                                                "limit": 1000})).get_json()
            cursor = page["cursor"]
            if not page["has_more"]:
                break
        for engine in engines:
            event.listen(engine, "before_cursor_execute", before)
            event.listen(engine, "after_cursor_execute", after)
        body = W.bodies(str(uuid.uuid4()), push_work(changes_file, n, tag), n)[0]
        r = client.post("/sync/v1/push", headers={**headers, "Authorization": f"Bearer {tokens['clinician']}"},
                        data=body)
        assert r.status_code == 200, r.get_data()[:300]
        client.post("/sync/v1/pull", headers={**headers, "Authorization": f"Bearer {tokens['nurse']}"},
                    data=json.dumps({"protocol": 1, "client_id": nurse_id, "cursor": cursor, "limit": PULL_PAGE}))
    finally:
        for engine in engines:
            for name, fn in (("before_cursor_execute", before), ("after_cursor_execute", after)):
                if event.contains(engine, name, fn):
                    event.remove(engine, name, fn)
        dispose(app)
    return {"times": dict(times), "urls": urls}


def explain(backend, urls, statement, parameters) -> str:
    con = backend.connect(urls[0])
    try:
        cur = con.cursor()
        if backend.name == "postgresql":
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
        else:
            cur.execute("EXPLAIN QUERY PLAN " + statement, parameters or ())
        return "\n".join(" | ".join(str(c) for c in row) for row in cur.fetchall())
    except Exception as exc:  # a statement that needs its transaction's state: say so
        return f"(could not explain: {exc})"
    finally:
        con.close()


def grown_statements(backend, small, large, factor_label) -> list[str]:
    out = []
    for statement, (calls, seconds, params) in sorted(large["times"].items(), key=lambda kv: -kv[1][1]):
        if not statement.lstrip().upper().startswith(("SELECT", "WITH", "UPDATE", "DELETE")):
            continue
        s_calls, s_seconds, _ = small["times"].get(statement, (0, 0.0, None))
        per_large = seconds / calls
        per_small = s_seconds / s_calls if s_calls else None
        if per_small is None or per_large < 0.0005 or per_large < 2.5 * per_small:
            continue
        short = " ".join(statement.split())[:400]
        out.append(f"{backend.name}: {per_small * 1000:.2f} ms -> {per_large * 1000:.2f} ms per call "
                   f"({calls} calls) at {factor_label}:\n  {short}\n  plan at the larger size:\n    "
                   + explain(backend, large["urls"], statement, params).replace("\n", "\n    "))
    return out


# --- main ------------------------------------------------------------------------------------------

def med3(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None, None
    return statistics.median(values), min(values), max(values)


def fmt(triple, digits=0, spread=True):
    m, lo, hi = triple
    if m is None:
        return "–"
    text = f"{m:,.{digits}f}"
    if spread and round(lo, digits) != round(hi, digits):
        text += f" ({lo:,.{digits}f}–{hi:,.{digits}f})"
    return text


def main():
    args = parse_args()
    work = Path(args.work)
    if (work / "pg").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "pg_cluster.sh"), "stop", str(work / "pg")],
                       capture_output=True, timeout=90)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sizes = {"1x": Spec(patients=args.patients, observations=args.observations, visits=2, visit_every=1),
             f"{args.factor}x": Spec(patients=args.patients * args.factor,
                                     observations=args.observations * args.factor, visits=2, visit_every=1)}
    backends = {}
    bases = {}  # (backend, size) -> (base name, tokens, changes_file, records on server)
    results = defaultdict(list)
    explains = {}
    try:
        sqlite = SQLiteBackend(work)
        if "sqlite" in args.backends:
            backends["sqlite"] = sqlite
        if "postgresql" in args.backends:
            backends["postgresql"] = PostgresBackend(work, args.pg_port)
        for label, spec in sizes.items():
            base = f"base{label}"
            manifest = prepare(Path(args.cache), spec, sqlite.dir / base, log)
            clinic_users = [u for u in manifest["users"] if u["clinic_id"] == manifest["clinic_id"]]
            tokens = {role: flask_cli(manifest["urls"], "tokens", "create",
                                      next(u["username"] for u in clinic_users if u["role"] == role),
                                      "--name", "bench-growth").strip() for role in ("nurse", "clinician")}
            for db_file in (sqlite.dir / base).glob("*.db"):  # copies of it are whole files
                con = sqlite3.connect(db_file)
                con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                con.close()
            records = manifest["changes"]
            for name, backend in backends.items():
                if name == "postgresql":
                    copy_into_postgres(manifest["urls"], backend, base, log)
                bases[(name, label)] = (base, tokens, manifest["changes_file"], records)
            log(f"{label}: {manifest['mutations']:,} mutations seeded; a nurse's device holds {records:,} records")
        for rep in range(1, args.reps + 1):
            for label in sizes:
                for name, backend in backends.items():
                    base, tokens, changes_file, records = bases[(name, label)]
                    r = one_run(args, backend, base, tokens, changes_file, work, f"r{rep}-{label}")
                    results[(name, label)].append(r)
                    f, p, i = r["full"], r["push"], r["incremental"]
                    log(f"rep {rep} {name:10} {label:>4}: full pull {f['rows']:,} rows in {f['seconds']:.1f} s "
                        f"({f['seconds'] / f['rows'] * 1000:.3f} ms/row); push {args.push_n / p['seconds']:.0f} mut/s "
                        f"{'ok' if p['ok'] else 'NOT OK ' + str(p['statuses'])}; incremental {i['rows']} rows in "
                        f"{i['seconds'] * 1000:.0f} ms; empty pull {r['empty']['seconds'] * 1000:.1f} ms")
        if args.explain:
            for name, backend in backends.items():
                timed = {}
                for label in sizes:
                    base, tokens, changes_file, _ = bases[(name, label)]
                    timed[label] = statement_times(backend, base, tokens, changes_file, 100, f"explain-{label}")
                labels = list(sizes)
                explains[name] = grown_statements(backend, timed[labels[0]], timed[labels[1]], labels[1])
                backend.drop("explain")
    finally:
        for backend in backends.values():
            backend.close()
    report = render(args, sizes, bases, results, explains)
    print(report)
    (work / "results.md").write_text(report + "\n")
    (work / "results.json").write_text(json.dumps(
        {"args": vars(args), "runs": {f"{k[0]} {k[1]}": v for k, v in results.items()}}, indent=1, default=str))
    log(f"done; raw figures in {work / 'results.json'}")
    return 0 if all(r["push"]["ok"] for rs in results.values() for r in rs) else 1


def render(args, sizes, bases, results, explains) -> str:
    labels = list(sizes)
    out = [f"## Growth: push and pull at {' and '.join(labels)} the data (median of {args.reps}, min–max)", "",
           "| DB | size | records held by the device | full pull s | ms/row | server CPU ms/row | KB/row | "
           f"push mut/s ({args.push_n}, batches of 100) | server CPU ms/mut | incremental pull ms ({args.push_n} rows) "
           "| ms/row | server CPU ms/row | empty pull ms |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    per = {}
    for (name, label), runs in results.items():
        records = bases[(name, label)][3]
        full_s = med3([r["full"]["seconds"] for r in runs])
        full_ms_row = med3([r["full"]["seconds"] / r["full"]["rows"] * 1000 for r in runs])
        full_cpu = med3([r["full"]["server_cpu_s"] / r["full"]["rows"] * 1000 for r in runs])
        kb_row = med3([r["full"]["bytes"] / r["full"]["rows"] / 1000 for r in runs])
        push = med3([args.push_n / r["push"]["seconds"] for r in runs])
        push_cpu = med3([r["push"]["server_cpu_s"] / args.push_n * 1000 for r in runs])
        inc = med3([r["incremental"]["seconds"] * 1000 for r in runs])
        inc_row = med3([r["incremental"]["seconds"] / max(1, r["incremental"]["rows"]) * 1000 for r in runs])
        inc_cpu = med3([r["incremental"]["server_cpu_s"] / max(1, r["incremental"]["rows"]) * 1000 for r in runs])
        empty = med3([r["empty"]["seconds"] * 1000 for r in runs])
        per[(name, label)] = {"full_ms_row": full_ms_row[0], "full_cpu": full_cpu[0], "push": push[0],
                              "push_cpu": push_cpu[0], "inc": inc[0], "inc_cpu": inc_cpu[0], "empty": empty[0]}
        out.append(f"| {name} | {label} | {records:,} | {fmt(full_s, 1)} | {fmt(full_ms_row, 3)} | "
                   f"{fmt(full_cpu, 3)} | {fmt(kb_row, 2, False)} | {fmt(push)} | {fmt(push_cpu, 2)} | "
                   f"{fmt(inc)} | {fmt(inc_row, 3)} | {fmt(inc_cpu, 3)} | {fmt(empty, 1)} |")
    out += ["", f"Ratio {labels[1]} / {labels[0]} (1.0 = the cost per row or per mutation is flat):", "",
            "| DB | full pull ms/row | full pull CPU/row | push mut/s | push CPU/mut | incremental pull ms "
            "| incremental CPU/row | empty pull ms |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in dict.fromkeys(n for n, _ in results):
        a, b = per.get((name, labels[0])), per.get((name, labels[1]))
        if not a or not b:
            continue
        ratio = lambda k: "–" if not a[k] else f"{b[k] / a[k]:.2f}"  # noqa: E731
        out.append(f"| {name} | {ratio('full_ms_row')} | {ratio('full_cpu')} | {ratio('push')} | "
                   f"{ratio('push_cpu')} | {ratio('inc')} | {ratio('inc_cpu')} | {ratio('empty')} |")
    for name, items in explains.items():
        out += ["", f"### Statements whose time per call grew with the data ({name})", ""]
        out += ["```", *(items or ["(none grew more than 2.5x)"]), "```"]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
