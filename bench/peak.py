#!/usr/bin/env python3
"""Peak load: 200 devices of two clinics, each pushing 20 mutations and pulling, all at once,
against the app as production runs it (the Procfile's gunicorn line) on PostgreSQL, next to
the peer (200 PouchDB clients replicating the same documents to pouchdb-server at once).

    nice -n 10 .venv/bin/python bench/peak.py            # 200 devices, 3 reps: ~6 min
    nice -n 10 .venv/bin/python bench/peak.py --quick    # 40 devices, 1 rep: ~1 min

Prints push and pull latency (p50/p95/p99), throughput, every error by kind, the server's
CPU and memory (RSS and PSS of the gunicorn master and workers at their peak), and the load
generator's own CPU. See bench/README.md ("Peak").
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.dont_write_bytecode = True  # noqa: E402

import _fleet as F  # noqa: E402
import _workload as W  # noqa: E402
from _backends import PostgresBackend  # noqa: E402
from _ceiling import dispose, make_app, push_inprocess  # noqa: E402
from _load import Clock, Connection, HttpError, latency_summary  # noqa: E402
from _memory import MemoryWatch, children, cpu_seconds  # noqa: E402
from _paths import BENCH, ROOT  # noqa: E402
from _server import Gunicorn  # noqa: E402
from _streams import Streams  # noqa: E402

T0 = time.monotonic()
PULL_LIMIT = 500  # static/sw/sync.js PULL_LIMIT


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--mutations", type=int, default=20, help="per device (20)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--readings-per-patient", type=int, default=5,
                    help="readings a device records for one patient before the next (5: a vitals "
                         "set; 1 scatters them, so batches of two devices share more patients)")
    ap.add_argument("--quick", action="store_true", help="40 devices, 1 repetition")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--peer-reps", type=int, default=1,
                    help="peer repetitions (1: one takes minutes, its one client process bounds it)")
    ap.add_argument("--profile", action="store_true",
                    help="one more (uncounted) run with py-spy sampling the workers")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (WEB_CONCURRENCY)")
    ap.add_argument("--threads", type=int, default=128, help="threads per worker (GUNICORN_THREADS)")
    ap.add_argument("--gunicorn-args", default="",
                    help="extra gunicorn settings, passed as GUNICORN_CMD_ARGS (e.g. '--keep-alive 0')")
    ap.add_argument("--timeout", type=float, default=60.0, help="client timeout per request, s")
    ap.add_argument("--streams", type=int, default=0,
                    help="open pages holding a live-update stream through the run, one per device "
                         "in turn (0; 200: every tablet has the app open)")
    ap.add_argument("--pg-port", type=int, default=55451)
    ap.add_argument("--app-port", type=int, default=18630)
    ap.add_argument("--peer-port", type=int, default=18650)
    ap.add_argument("--work", default="/tmp/bench-peak/peak", help="scratch directory (emptied)")
    a = ap.parse_args()
    if a.quick:
        a.devices, a.reps = min(a.devices, 40), 1
    return a


# --- setup -----------------------------------------------------------------------------------

def setup(backend, devices, fixtures):
    """Base database: the demo organization, one user and token per device, the clinics'
    patients with open visits (pushed in-process as each clinic's demo nurse)."""
    from sqlalchemy import select
    from app.extensions import db
    from app.models import Clinic, Membership, Team, User
    from app.services import tokens
    from app.services.accounts import hash_password
    info = backend.make_base()
    urls = backend.urls("base")
    app = make_app(backend, urls)
    fixture_tokens = {}
    with app.app_context():
        clinics = {c.code: c for c in db.session.execute(select(Clinic)).scalars()}
        teams = {t.clinic_id: t.id for t in db.session.execute(select(Team)).scalars()}
        org_id = next(iter(clinics.values())).organization_id
        password = hash_password("peak-devices-sign-in-with-tokens")  # one hash for all: never used
        for code, fx in fixtures.items():
            fx.clinic_id = clinics[code].id
            nurse = db.session.execute(select(User).join(Membership, Membership.user_id == User.id)
                                       .where(Membership.clinic_id == fx.clinic_id,
                                              Membership.role == "nurse")).scalars().first()
            fixture_tokens[code] = tokens.issue(nurse, "bench-peak-setup", fx.clinic_id)
        for d in devices:
            user = User(id=W.derived("peak-user", d.username), organization_id=org_id,
                        username=d.username, display_name=f"Peak {d.username}", password_hash=password)
            db.session.add(user)
            db.session.flush()
            for code in filter(None, (d.clinic, d.also_member_of)):
                cid = clinics[code].id
                db.session.add(Membership(id=W.derived("peak-member", d.username, code), user_id=user.id,
                                          clinic_id=cid, team_id=teams.get(cid), role=d.role))
            d.token = tokens.issue(user, f"tablet {d.index}", clinics[d.clinic].id)
        db.session.commit()
    for code, fx in fixtures.items():
        regs = W.wire(F.registrations(fx), f"peak-setup-{code}")
        statuses = push_inprocess(app, fixture_tokens[code],
                                  W.bodies(W.derived("peak-setup-client", code), regs, 100))
        if set(statuses) != {"applied"}:
            raise RuntimeError(f"fixture registration {code}: {dict(statuses)}")
    dispose(app)
    return info


def headers(device) -> dict:
    return {"Content-Type": "application/json", "Accept": "application/json",
            "Authorization": f"Bearer {device.token}", "X-Client-Id": device.client_id}


async def first_sync(port, devices, concurrency=16):
    """Every device's first sync (untimed): its subset, and the cursor it goes on from."""
    sem = asyncio.Semaphore(concurrency)
    rows = Counter()

    async def one(d):
        async with sem:
            con = Connection(port, headers(d), timeout=300)
            cursor = None
            try:
                while True:
                    body = json.dumps({"protocol": 1, "client_id": d.client_id, "cursor": cursor,
                                       "limit": 1000, "telemetry": F.telemetry(d, 0)}).encode()
                    status, data, _ = await con.post("/sync/v1/pull", body)
                    if status != 200:
                        raise RuntimeError(f"first sync of {d.username}: {status} {data[:300]!r}")
                    page = json.loads(data)
                    cursor = page["cursor"]
                    rows[d.index] += len(page["changes"])
                    if not page["has_more"]:
                        break
            finally:
                await con.close()
            d.cursor = cursor
    await asyncio.gather(*(one(d) for d in devices))
    return rows


# --- the timed peak ----------------------------------------------------------------------------

class Tally:
    def __init__(self):
        self.push, self.pull = [], []          # seconds per request
        # Each device's first push goes out at the start signal, all 200 at once: that burst
        # and the pushes after it are reported apart as well.
        self.opening_push, self.later_push = [], []
        self.errors = Counter()                # kind -> count
        self.statuses = Counter()              # result status of each mutation
        self.pulled_rows = 0
        self.bytes_in = 0
        self.requests = Counter()


RETRY_AFTER_S = 2.0  # the server's Retry-After on a 503; the worker waits at least that
MAX_ATTEMPTS = 5


async def send(con, kind: str, body: bytes, tally: Tally, also: list | None = None):
    """One request as the worker makes it: a 503 or a lost connection is counted as an error,
    then sent again after Retry-After (a push or pull sent again is answered alike).
    Returns the parsed answer, or None when the device gives up."""
    for _ in range(MAX_ATTEMPTS):
        t0 = time.perf_counter()
        try:
            status, data, n = await con.post(f"/sync/v1/{kind}", body)
        except asyncio.TimeoutError:
            tally.errors[f"{kind}: client timeout"] += 1
            await asyncio.sleep(RETRY_AFTER_S)
            continue
        except HttpError as exc:
            tally.errors[f"{kind}: connection {exc}"] += 1
            await asyncio.sleep(RETRY_AFTER_S)
            continue
        getattr(tally, kind).append(time.perf_counter() - t0)
        if also is not None:
            also.append(time.perf_counter() - t0)
        tally.requests[kind] += 1
        tally.bytes_in += n
        if status == 200:
            return json.loads(data)
        tally.errors[f"{kind}: HTTP {status} {_error_code(data)}"] += 1
        if status != 503:
            return None
        await asyncio.sleep(RETRY_AFTER_S)
    return None


async def device_run(d, port, start: asyncio.Event, tally: Tally, timeout: float):
    con = Connection(port, headers(d), timeout=timeout)
    await con._open()  # every device connected before the clock starts
    cursor = d.cursor
    pushes = [json.dumps({"protocol": 1, "client_id": d.client_id, "mutations": batch,
                          "telemetry": F.telemetry(d, len(d.mutations) - i * d.batch)},
                         separators=(",", ":")).encode() for i, batch in enumerate(d.pushes())]
    await start.wait()
    try:
        for number, body in enumerate(pushes):
            answer = await send(con, "push", body, tally,
                                tally.later_push if number else tally.opening_push)
            if answer is None:
                return  # the next batch would only be refused as out of order
            for r in answer["results"]:
                tally.statuses[r["status"] if r["status"] == "applied"
                               else f"{r['status']} {(r.get('error') or {}).get('code', '')}"] += 1
            # then the pull the worker's sync does after a push
            while True:
                body = json.dumps({"protocol": 1, "client_id": d.client_id, "cursor": cursor,
                                   "limit": PULL_LIMIT, "telemetry": F.telemetry(d, 0)}).encode()
                page = await send(con, "pull", body, tally)
                if page is None:
                    break
                cursor = page["cursor"]
                tally.pulled_rows += len(page["changes"])
                if not page["has_more"]:
                    break
    finally:
        await con.close()


def _error_code(data: bytes) -> str:
    try:
        return json.loads(data).get("error", "")
    except (ValueError, AttributeError):
        return data[:80].decode("latin-1", "replace")


def run_peak(port, devices, timeout, n_streams=0) -> tuple[Tally, float, float, dict]:
    tally = Tally()
    held = {}

    async def main():
        streams = Streams(port, [devices[i % len(devices)].token for i in range(n_streams)])
        if n_streams:
            answered = await streams.open()
            held["answered_before_start"] = answered
            held["first_answer"] = latency_summary(streams.first_answer)
            log(f"  {answered}/{n_streams} streams answered before the start "
                f"({dict(streams.counts)})")
        start = asyncio.Event()
        tasks = [asyncio.create_task(device_run(d, port, start, tally, timeout)) for d in devices]
        await asyncio.sleep(0.5)  # connections open
        with Clock() as clock:
            start.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                tally.errors[f"device: {type(r).__name__}: {r}"[:160]] += 1
        if n_streams:
            await streams.close()
            held["events"] = dict(streams.counts)
        return clock
    clock = asyncio.run(main())
    return tally, clock.seconds, clock.cpu, held


def app_rep(args, backend, devices, work, rep, profile=False) -> dict:
    urls = backend.clone("run")
    backend.checkpoint()
    before = backend.count_rows(urls)
    srv = Gunicorn(urls, args.app_port, work / "gunicorn.log", args.workers, args.threads)
    pids = {"master": srv.proc.pid, **{f"worker {i + 1}": p for i, p in enumerate(children(srv.proc.pid))}}
    sampler = None
    try:
        if profile:
            from _profile import Sampler
            sampler = Sampler(srv.proc.pid, work / "profile-peak.txt")
            time.sleep(1.0)
        pg = postgres_pids(backend)
        cpu0 = {k: cpu_seconds([p]) for k, p in pids.items()}
        pg0 = cpu_seconds(pg, reaped_by=pg[0])
        with MemoryWatch(pids) as mem:
            tally, seconds, gen_cpu, streams = run_peak(args.app_port, devices, args.timeout,
                                                        args.streams)
        per_process_cpu = {k: round(cpu_seconds([p]) - cpu0[k], 1) for k, p in pids.items()}
        server_cpu = sum(per_process_cpu.values())
        pg = postgres_pids(backend)
        pg_cpu = cpu_seconds(pg, reaped_by=pg[0]) - pg0
        if sampler:
            sampler.stop()
    finally:
        srv.stop()
    after = backend.count_rows(urls)
    backend.drop("run")
    expected = len(devices) * args.mutations
    applied = tally.statuses.get("applied", 0)
    new_results = after.get("mutation_result", 0) - before.get("mutation_result", 0)
    return {"rep": rep, "seconds": seconds, "generator_cpu_s": gen_cpu, "server_cpu_s": server_cpu,
            "cpu_by_process": per_process_cpu, "postgres_cpu_s": pg_cpu,
            "push": latency_summary(tally.push), "pull": latency_summary(tally.pull),
            "opening_push": latency_summary(tally.opening_push),
            "later_push": latency_summary(tally.later_push),
            "requests": dict(tally.requests), "errors": dict(tally.errors),
            "statuses": dict(tally.statuses), "applied": applied, "expected": expected,
            "stored_results": new_results, "pulled_rows": tally.pulled_rows,
            "mb_received": round(tally.bytes_in / 1e6, 2), "memory": mem.report(),
            "mut_per_s": applied / seconds, "req_per_s": sum(tally.requests.values()) / seconds,
            "streams": streams,
            "ok": not tally.errors and applied == expected and new_results == expected}


def postgres_pids(backend) -> list[int]:
    """The cluster's postmaster and every backend under it (their CPU is the database's)."""
    master = int((backend.dir / "data" / "postmaster.pid").read_text().split()[0])
    return [master, *children(master)]


# --- the peer ------------------------------------------------------------------------------------

def peer_plan(devices, fixtures, path: Path):
    """The same work as CouchDB documents: one per patient, visit and observation; a device's
    patient.update is an edit of the patient document it pulled."""
    clinics = {}
    for code, fx in fixtures.items():
        docs = []
        for k, p in enumerate(fx.patients):
            docs.append({"_id": p["id"], "type": "patient", "clinic_id": fx.clinic_id,
                         **{f: p[f] for f in ("given_name", "family_name", "sex", "birth_date", "phone")}})
            docs.append({"_id": p["visit_id"], "type": "visit", "patient_id": p["id"],
                         "clinic_id": fx.clinic_id, "station": "triage"})
            docs.append({"_id": W.derived("peak-first-obs", p["id"]), "type": "observation",
                         "patient_id": p["id"], "visit_id": p["visit_id"], "code": "8310-5",
                         "value": 36.5 + (k % 20) / 10, "unit": "Cel", "effective_at": "2026-01-15T07:30:00Z"})
        clinics[code.lower()] = docs
    out = []
    for d in devices:
        batches = []
        for batch in d.pushes():
            batches.append([{"_id": m["entity_id"], "type": m["entity"], **m["data"]}
                            if m["type"] == "observation.record" else
                            {"edit": m["entity_id"], **m["data"]} for m in batch])
        out.append({"db": d.clinic.lower(), "batches": batches})
    path.write_text(json.dumps({"clinics": clinics, "devices": out}, separators=(",", ":")))


def peer_rep(args, peer_plan_file, work, rep) -> dict:
    from _peer import NODE_DIR, PouchServer
    shutil.rmtree(work / "pouch", ignore_errors=True)
    peer = PouchServer(work, args.peer_port)
    try:
        env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}
        cmd = ["node", str(BENCH / "pouch_peak.js"), "--server", peer.url, "--plan", str(peer_plan_file),
               "--prefix", f"r{rep}", "--server-pid", str(peer.proc.pid)]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        mem = None
        # Memory is sampled over the timed section only: the script says when it starts.
        line = proc.stdout.readline()
        if line.startswith("ready"):
            cpu0 = cpu_seconds([peer.proc.pid])
            with MemoryWatch({"pouchdb-server": peer.proc.pid}) as mem:
                out, err = proc.communicate(timeout=900)
            server_cpu = cpu_seconds([peer.proc.pid]) - cpu0
        else:
            out, err = proc.communicate(timeout=900)
            out = line + out
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"peer peak failed:\n{err[-2000:]}")
        r = lines[-1]
        r["server_cpu_s"] = server_cpu
        r["memory"] = mem.report() if mem else None
        r["push"] = latency_summary(r.pop("push_s"))
        r["pull"] = latency_summary(r.pop("pull_s"))
        r["mut_per_s"] = r["docs_written"] / r["seconds"]
        r["req_per_s"] = r["http_requests"] / r["seconds"]
        return r
    finally:
        peer.stop()


# --- report --------------------------------------------------------------------------------------

def _p50_p95(summary: dict) -> str:
    return f"{summary['p50_ms']}/{summary['p95_ms']}"


def med(runs, *path):
    vals = []
    for r in runs:
        v = r
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if v is not None:
            vals.append(v)
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def fmt(triple, digits=0):
    m, lo, hi = triple
    if m is None:
        return "–"
    if len(set([round(lo, digits), round(hi, digits)])) == 1:
        return f"{m:,.{digits}f}"
    return f"{m:,.{digits}f} ({lo:,.{digits}f}–{hi:,.{digits}f})"


def render(args, app_runs, peer_runs, setup_info) -> str:
    out = [f"## Peak: {args.devices} devices x {args.mutations} mutations at once, push then pull "
           f"(median of {len(app_runs)}, min–max; "
           f"peer: {len(peer_runs)} run{'s' if len(peer_runs) != 1 else ''})", "",
           f"the Procfile's gunicorn, {args.workers} workers x {args.threads} request threads "
           f"(GUNICORN_THREADS) and the event streams' (SYNC_EVENTS_STREAMS)"
           f"{' ' + args.gunicorn_args if args.gunicorn_args else ''}, PostgreSQL; "
           f"{f'{args.streams} live-update streams held open through the run (pages open); ' if args.streams else ''}"
           f"{setup_info}", "",
           "| who | push p50 ms | push p95 ms | push p99 ms | pull p50 ms | pull p95 ms | pull p99 ms "
           "| mut/s | req/s | wall s | errors | server CPU s (app; PostgreSQL) | generator CPU s | server memory peak MB (RSS; PSS) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for who, runs in (("app", app_runs), ("peer", peer_runs)):
        if not runs:
            continue
        errors = sum(sum(r.get("errors", {}).values()) if isinstance(r.get("errors"), dict)
                     else r.get("errors", 0) for r in runs)
        mem = f"{fmt(med(runs, 'memory', 'total_rss_mb'))}; {fmt(med(runs, 'memory', 'total_pss_mb'))}"
        gen = med(runs, "generator_cpu_s") if who == "app" else med(runs, "client_cpu_s")
        out.append(f"| {who} | {fmt(med(runs, 'push', 'p50_ms'))} | **{fmt(med(runs, 'push', 'p95_ms'))}** | "
                   f"{fmt(med(runs, 'push', 'p99_ms'))} | {fmt(med(runs, 'pull', 'p50_ms'))} | "
                   f"{fmt(med(runs, 'pull', 'p95_ms'))} | {fmt(med(runs, 'pull', 'p99_ms'))} | "
                   f"{fmt(med(runs, 'mut_per_s'))} | {fmt(med(runs, 'req_per_s'))} | {fmt(med(runs, 'seconds'), 1)} | "
                   f"**{errors}** | {fmt(med(runs, 'server_cpu_s'), 1)}"
                   f"{'; ' + fmt(med(runs, 'postgres_cpu_s'), 1) if who == 'app' else ''} | {fmt(gen, 1)} | {mem} |")
    out.append("")
    for r in app_runs:
        per = "; ".join(f"{k} {v['rss']:.0f}/{v['pss']:.0f}" for k, v in r["memory"]["per_process_mb"].items())
        out.append(f"- app rep {r['rep']}: push p50/p95 of the opening burst (each device's first "
                   f"push, all at once) {_p50_p95(r['opening_push'])} ms, of the pushes after it "
                   f"{_p50_p95(r['later_push'])} ms; {r['requests']} requests, statuses {r['statuses']}, "
                   f"{r['stored_results']} results stored of {r['expected']}, {r['pulled_rows']:,} rows pulled, "
                   f"{r['mb_received']} MB received; errors {r['errors'] or 'none'}; CPU s by process "
                   f"{r['cpu_by_process']}; memory RSS/PSS MB: {per}"
                   + (f"; streams: {r['streams']['answered_before_start']}/{args.streams} answered before "
                      f"the start (first answer p50/p95 {r['streams']['first_answer']['p50_ms']}/"
                      f"{r['streams']['first_answer']['p95_ms']} ms), events {r['streams']['events']}"
                      if r.get("streams") else ""))
    for r in peer_runs:
        out.append(f"- peer rep {r['rep']}: {r['http_requests']} requests, {r['docs_written']} docs written, "
                   f"{r['docs_read']:,} docs pulled; errors {r['errors']} {r.get('error_kinds') or ''}")
    return "\n".join(out)


def save_partial(work, args, app_runs, peer_runs):
    """Every repetition's figures as soon as it ends: a run stopped midway keeps them."""
    (work / "results.json").write_text(json.dumps({"args": vars(args), "app": app_runs, "peer": peer_runs},
                                                  indent=1, default=str))


def main():
    args = parse_args()
    work = Path(args.work)
    if (work / "pg").exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "pg_cluster.sh"), "stop", str(work / "pg")],
                       capture_output=True, timeout=90)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if args.gunicorn_args:
        os.environ["GUNICORN_CMD_ARGS"] = args.gunicorn_args  # the servers inherit it
    devices, fixtures = F.plan(args.devices, args.mutations, ["RIV", "HIL"],
                               readings_per_patient=args.readings_per_patient)
    batches = Counter(d.batch for d in devices)
    setup_info = (f"devices: {dict(sorted(Counter(d.clinic for d in devices).items()))} by clinic, "
                  f"{dict(sorted(Counter(d.role for d in devices).items()))} by role, "
                  f"{sum(1 for d in devices if d.also_member_of)} of them working at both clinics; "
                  f"pushes of {dict(sorted(batches.items(), reverse=True))} mutations (size: devices), "
                  f"each followed by a pull (pages of {PULL_LIMIT}); patients per clinic "
                  f"{ {c: len(fx.patients) for c, fx in fixtures.items()} }, each with an open visit")
    log(setup_info)
    backend = PostgresBackend(work, args.pg_port)
    app_runs, peer_runs = [], []
    profile_text = None
    try:
        log("base: flask db upgrade, demo seed, a user and token per device, clinic fixtures")
        setup(backend, devices, fixtures)
        log("first sync of every device (untimed), on the base")
        srv = Gunicorn(backend.urls("base"), args.app_port, work / "gunicorn-setup.log", args.workers, args.threads)
        try:
            t0 = time.perf_counter()
            rows = asyncio.run(first_sync(args.app_port, devices))
            log(f"  {sum(rows.values()):,} rows to {len(devices)} devices in {time.perf_counter() - t0:.1f} s")
        finally:
            srv.stop()
        if not args.no_peer:
            from _peer import ensure_node_packages
            ensure_node_packages(log)
            peer_plan(devices, fixtures, work / "peer-plan.json")
        for rep in range(1, args.reps + 1):
            r = app_rep(args, backend, devices, work, rep)
            app_runs.append(r)
            log(f"rep {rep} app : {r['applied']}/{r['expected']} applied in {r['seconds']:.1f} s "
                f"({r['mut_per_s']:.0f} mut/s); push p50/p95/p99 {r['push']['p50_ms']}/{r['push']['p95_ms']}/"
                f"{r['push']['p99_ms']} ms (the opening burst {_p50_p95(r['opening_push'])}, the pushes "
                f"after it {_p50_p95(r['later_push'])}); "
                f"pull {r['pull']['p50_ms']}/{r['pull']['p95_ms']}/{r['pull']['p99_ms']} ms; "
                f"errors {r['errors'] or 0}; generator CPU {r['generator_cpu_s']:.1f} s; "
                f"server CPU {r['cpu_by_process']} s, PostgreSQL {r['postgres_cpu_s']:.1f} s; "
                f"RSS {r['memory']['total_rss_mb']} MB"
                + (f"; streams {r['streams']}" if r['streams'] else ""))
            save_partial(work, args, app_runs, peer_runs)
            if not args.no_peer and rep <= args.peer_reps:
                p = peer_rep(args, work / "peer-plan.json", work, rep)
                p["rep"] = rep
                peer_runs.append(p)
                log(f"rep {rep} peer: {p['docs_written']} docs in {p['seconds']:.1f} s; push p50/p95/p99 "
                    f"{p['push']['p50_ms']}/{p['push']['p95_ms']}/{p['push']['p99_ms']} ms; pull "
                    f"{p['pull']['p50_ms']}/{p['pull']['p95_ms']}/{p['pull']['p99_ms']} ms; errors {p['errors']}; "
                    f"client CPU {p['client_cpu_s']:.1f} s, server CPU {p['server_cpu_s']:.1f} s")
        if args.profile:
            from _profile import summarise
            app_rep(args, backend, devices, work, "profile", profile=True)
            raw = work / "profile-peak.txt"
            profile_text = summarise(raw) if raw.exists() else "(py-spy wrote nothing)"
    finally:
        backend.close()
    report = render(args, app_runs, peer_runs, setup_info)
    if profile_text:
        report += f"\n\n### Profile (py-spy, all workers, one uncounted run)\n\n```\n{profile_text}\n```"
    print(report)
    (work / "results.md").write_text(report + "\n")
    save_partial(work, args, app_runs, peer_runs)
    log(f"done; raw figures in {work / 'results.json'}")
    return 0 if all(r["ok"] for r in app_runs) and all(p.get("ok") for p in peer_runs) else 1


if __name__ == "__main__":
    sys.exit(main())
