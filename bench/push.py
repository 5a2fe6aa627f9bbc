#!/usr/bin/env python3
"""Push benchmark: mutations per second through POST /sync/v1/push, on SQLite and PostgreSQL,
next to the peer (PouchDB -> pouchdb-server) pushing the same documents and the raw write
ceiling of the same rows, all measured in the same run.

    nice -n 19 .venv/bin/python bench/push.py            # default: a few minutes
    nice -n 19 .venv/bin/python bench/push.py --n 300 --n10 100 --n1 20 --reps 1    # quick look

See bench/README.md for what is measured and how to read the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.dont_write_bytecode = True  # noqa: E402  (nothing written into the repository's folders)

import _workload as W  # noqa: E402
from _backends import PostgresBackend, SQLiteBackend  # noqa: E402
from _ceiling import Recorder, dispose, make_app, push_inprocess, replay  # noqa: E402
from _paths import PEERS, ROOT  # noqa: E402
from _server import Gunicorn, Pusher  # noqa: E402

KIND_LABEL = {"obs": "observation.record", "patient": "patient.update"}
T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="mutations per run with batches of 100 (1000)")
    ap.add_argument("--n10", type=int, default=300, help="mutations per run with batches of 10 (300)")
    ap.add_argument("--n1", type=int, default=100, help="mutations per run with batches of 1 (100)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the median is reported (3)")
    ap.add_argument("--batches", default="1,10,100")
    ap.add_argument("--kinds", default="obs,patient", help="obs (observation.record), patient (patient.update)")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--census-n", type=int, default=500,
                    help="mutations per case recorded for the row census and ceiling (at most N)")
    ap.add_argument("--no-peer", action="store_true", help="skip the PouchDB peer")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (Procfile WEB_CONCURRENCY)")
    ap.add_argument("--threads", type=int, default=128, help="threads per worker (GUNICORN_THREADS)")
    ap.add_argument("--pg-port", type=int, default=55499)
    ap.add_argument("--app-port", type=int, default=18410, help="SQLite app; PostgreSQL app gets +1")
    ap.add_argument("--peer-port", type=int, default=15994)
    ap.add_argument("--work", default="/tmp/bench-push", help="scratch directory (emptied)")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed runs, one more (uncounted) run of each batch-100 case "
                         "with py-spy sampling the workers; prints where the server's time goes")
    a = ap.parse_args()
    a.batches = [int(b) for b in a.batches.split(",")]
    a.kinds = a.kinds.split(",")
    a.backends = a.backends.split(",")
    a.sizes = {1: a.n1, 10: a.n10, 100: a.n}
    for b in a.batches:
        a.sizes.setdefault(b, a.n)
    return a


def med(xs):
    return statistics.median(xs) if xs else None


class Case:
    """(backend, kind, batch) and everything measured for it."""

    def __init__(self, backend, kind, batch, n):
        self.backend, self.kind, self.batch, self.n = backend, kind, batch, n
        self.runs = []          # app runs over HTTP
        self.ceiling = []       # (seconds, rows, mutations) raw replays
        self.census = None      # Counter (table, verb) -> rows, for census_n mutations
        self.census_n = 0
        self.statements = None  # Counter: statements sent in the census, by first word
        self.transactions = None


def setup_backend(backend, args, rows, patients, log):
    log(f"{backend.name}: base database (flask db upgrade, demo seed --patients 0, tokens create)")
    info = backend.make_base()
    regs = [W.as_tuple(m) for m in W.registrations(rows, patients, info["clinic_id"])]
    app = make_app(backend, backend.urls("base"))
    log(f"{backend.name}: registering {len(regs)} fixture patients and visits (in-process push)")
    statuses = push_inprocess(app, info["token"], W.bodies("bench-setup-0001", W.wire(regs, "setup"), 100))
    dispose(app)
    if set(statuses) != {"applied"}:
        raise RuntimeError(f"fixture registration: {dict(statuses)}")
    backend.seal_base()
    return info


def case_mutations(kind, batch, n, rows, patients, state, tag):
    if kind == "obs":
        return [W.obs_mutation(r, tag) for r in rows[:n]]
    return [state.update(p["id"]) for p in patients[:n]]


def main():
    args = parse_args()
    work = Path(args.work)
    if (work / "pg").exists():  # a cluster an interrupted run left: stop it before emptying
        subprocess.run(["bash", str(ROOT / "scripts" / "pg_cluster.sh"), "stop", str(work / "pg")],
                       capture_output=True, timeout=90)
    shutil.rmtree(work, ignore_errors=True)
    (work / "data").mkdir(parents=True)
    max_n = {k: max(args.sizes[b] for b in args.batches) for k in args.kinds}
    rows = W.obs_rows(max(max_n.get("obs", 1), 20))
    patients = W.update_patients(max(max_n.get("patient", 1), 1))
    peer_files = {}
    for b in args.batches:
        n = args.sizes[b]
        for kind in args.kinds:
            f = work / "data" / f"{kind}_{n}.json"
            if not f.exists():
                payload = rows[:n] if kind == "obs" else patients[:n]
                f.write_text(json.dumps(payload, separators=(",", ":")))
            peer_files[(kind, b)] = f
    sample = W.wire([W.obs_mutation(rows[0], "x")], "x")[0]
    log(f"data: {len(rows)} observation rows (peers/gen_data.py, seed {W.SEED}), "
        f"{len(patients)} update patients; one observation mutation is "
        f"{len(json.dumps(sample, separators=(',', ':')))} B on the wire")

    backends, servers, pusher, peer = [], {}, {}, None
    cases = {}
    results = {"args": {k: v for k, v in vars(args).items()}, "versions": versions()}
    try:
        for name in args.backends:
            backends.append(SQLiteBackend(work) if name == "sqlite" else PostgresBackend(work, args.pg_port))
        info = {}
        for backend in backends:
            info[backend.name] = setup_backend(backend, args, rows, patients, log)

        # Census + recorded writes per case, each on its own fresh clone.
        for backend in backends:
            for kind in args.kinds:
                for b in args.batches:
                    c = cases[(backend.name, kind, b)] = Case(backend, kind, b, args.sizes[b])
                    m = min(args.census_n, c.n)
                    m -= m % b or 0
                    m = max(m, b)
                    urls = backend.clone("census")
                    app = make_app(backend, urls)
                    state = W.PatientState(patients)
                    muts = W.wire(case_mutations(kind, b, m, rows, patients, state, f"census-{b}"),
                                  f"census-{kind}-{b}")
                    rec = Recorder(app)
                    statuses = push_inprocess(app, info[backend.name]["token"],
                                              W.bodies(f"bench-census-{kind}-{b}", muts, b))
                    rec.close()
                    dispose(app)
                    backend.drop("census")
                    if set(statuses) != {"applied"}:
                        raise RuntimeError(f"census {backend.name}/{kind}/{b}: {dict(statuses)}")
                    c.census, c.census_n, c.transactions = rec.census(), m, rec.transactions()
                    c.statements = rec.statements()
                    rec.events = None
                    log(f"{backend.name}: census {KIND_LABEL[kind]} batch {b}: {m} mutations, "
                        f"{sum(c.census.values()) / m:.2f} rows written per mutation")

        # Servers: the app on each database (a clone of the base), and the peer.
        for i, backend in enumerate(backends):
            urls = backend.clone("run")
            servers[backend.name] = Gunicorn(urls, args.app_port + i, work / f"gunicorn-{backend.name}.log",
                                             args.workers, args.threads)
            pusher[backend.name] = Pusher(args.app_port + i, info[backend.name]["token"])
            log(f"{backend.name}: gunicorn up on 127.0.0.1:{args.app_port + i} "
                f"(pid {servers[backend.name].proc.pid}; {servers[backend.name].command})")
        states = {backend.name: W.PatientState(patients) for backend in backends}
        peer_runs = {}
        if not args.no_peer:
            from _peer import PouchServer, ensure_node_packages
            ensure_node_packages(log)
            peer = PouchServer(work, args.peer_port)
            log(f"peer: pouchdb-server up on 127.0.0.1:{args.peer_port} (pid {peer.proc.pid})")

        # Timed loop, interleaved: each repetition measures every case, the peer and the ceiling.
        for rep in range(1, args.reps + 1):
            for b in args.batches:
                for kind in args.kinds:
                    for backend in backends:
                        c = cases[(backend.name, kind, b)]
                        tag = f"r{rep}-b{b}"
                        muts = W.wire(case_mutations(kind, b, c.n, rows, patients,
                                                     states[backend.name], tag), f"{kind}-{tag}")
                        bodies = W.bodies(f"bench-{kind}-b{b}-r{rep}", muts, b)
                        urls = backend.urls("run")
                        before = backend.count_rows(urls)
                        if backend.name == "postgresql":
                            backend.checkpoint()
                        srv = servers[backend.name]
                        cpu0 = srv.cpu_seconds()
                        run = pusher[backend.name].run(bodies)
                        run["server_cpu_s"] = srv.cpu_seconds() - cpu0
                        after = backend.count_rows(urls)
                        run["inserted"] = {t: after[t] - before.get(t, 0) for t in after
                                           if after[t] != before.get(t, 0)}
                        run["ok"] = run["statuses"] == {"applied": c.n}
                        run["rate"] = c.n / run["seconds"]
                        c.runs.append(run)
                        log(f"rep {rep} {backend.name:10} {KIND_LABEL[kind]:18} batch {b:3}: "
                            f"{c.n:5} in {run['seconds']:6.2f} s = {run['rate']:7.0f} mut/s "
                            f"{'ok' if run['ok'] else 'NOT OK ' + str(run['statuses'])}")
                        # The raw ceiling of the same rows, on a fresh clone.
                        urls = backend.clone("ceiling")
                        if backend.name == "postgresql":
                            backend.checkpoint()
                        seconds, nrows = replay(backend, urls, c.transactions)
                        backend.drop("ceiling")
                        c.ceiling.append((seconds, nrows, c.census_n))
                    if peer is not None:
                        r = peer.push(kind, b, peer_files[(kind, b)], work / "pouch" / "client")
                        peer_runs.setdefault((kind, b), []).append(r)
                        log(f"rep {rep} {'peer':10} {KIND_LABEL[kind]:18} batch {b:3}: "
                            f"{r['n']:5} in {r['seconds']:6.2f} s = {r['rate']:7.0f} docs/s "
                            f"{'ok' if r['ok'] else 'NOT OK'} ({r['script']})")

        context = peer_ceilings(backends, peer_files.get(("obs", 100)) or
                                next(iter(peer_files.values())), work, args) if "obs" in args.kinds else []
        profiles = profile_pass(args, backends, servers, pusher, states, rows, patients, work) \
            if args.profile else []
    finally:
        for p in pusher.values():
            p.close()
        for s in servers.values():
            s.stop()
        if peer is not None:
            peer.stop()
        for backend in backends:
            backend.close()

    report = render(cases, peer_runs, context, args, results["versions"])
    for title, text in profiles:
        report += f"\n\n### Profile: {title}\n\n```\n{text}\n```"
    print(report)
    (work / "results.md").write_text(report + "\n")
    results["cases"] = [{"backend": c.backend.name, "kind": c.kind, "batch": c.batch, "n": c.n,
                         "runs": c.runs, "ceiling": c.ceiling, "census_n": c.census_n,
                         "census": [[t, v, n] for (t, v), n in sorted(c.census.items())],
                         "statements": dict(c.statements)}
                        for c in cases.values()]
    results["peer"] = [{"kind": k, "batch": b, "runs": r} for (k, b), r in peer_runs.items()]
    results["context"] = context
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    log(f"done; raw figures in {work / 'results.json'}")
    bad = [c for c in cases.values() if not all(r["ok"] for r in c.runs)]
    bad += [r for rs in peer_runs.values() for r in rs if not r.get("ok")]
    return 1 if bad else 0


def profile_pass(args, backends, servers, pusher, states, rows, patients, work):
    from _profile import Sampler, summarise
    out = []
    b = max(args.batches)
    for kind in args.kinds:
        for backend in backends:
            n = args.sizes[b]
            muts = W.wire(case_mutations(kind, b, n, rows, patients, states[backend.name],
                                         f"profile-b{b}"), f"{kind}-profile")
            bodies = W.bodies(f"bench-{kind}-b{b}-profile", muts, b)
            raw = work / f"profile-{backend.name}-{kind}-b{b}.txt"
            sampler = Sampler(servers[backend.name].proc.pid, raw)
            time.sleep(1.0)  # py-spy attaches
            run = pusher[backend.name].run(bodies)
            sampler.stop()
            title = (f"{backend.name}, {KIND_LABEL[kind]}, batch {b}: {n} mutations, "
                     f"{n / run['seconds']:,.0f} mut/s while sampled")
            log("profiled " + title)
            out.append((title, summarise(raw) if raw.exists() else "(py-spy wrote nothing)"))
    return out


def peer_ceilings(backends, data, work, args) -> list[dict]:
    """peers/sql_ceilings.py as is: the peer-shaped row (one 400-byte row per document)."""
    out = []
    for backend in backends:
        if backend.name == "sqlite":
            cmd = ["sqlite", "--data", str(data), "--dir", str(work / "sql_ceilings"), "--reps", "1"]
        else:
            cmd = ["pg", "--data", str(data), "--dsn", backend.dsn(), "--reps", "1"]
        try:
            res = subprocess.run([sys.executable, str(PEERS / "sql_ceilings.py"), *cmd],
                                 capture_output=True, text=True, timeout=120, cwd=PEERS,
                                 env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        except subprocess.TimeoutExpired:
            continue
        for line in res.stdout.splitlines():
            if line.startswith("{"):
                d = json.loads(line)
                if "batch100" in d["variant"]:
                    out.append({"backend": backend.name, **d})
    return out


def versions() -> dict:
    v = {"python": platform.python_version()}
    for p in ("flask", "gunicorn", "sqlalchemy", "psycopg"):
        try:
            v[p] = version(p)
        except Exception:
            pass
    import sqlite3
    v["sqlite"] = sqlite3.sqlite_version
    try:
        v["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                   timeout=10).stdout.strip()
    except OSError:
        pass
    return v


def fmt(x, digits=0):
    return "–" if x is None else f"{x:,.{digits}f}"


def render(cases, peer_runs, context, args, vers) -> str:
    out = ["", f"## Push: /sync/v1/push vs the peer and the raw ceiling (median of {args.reps}, min–max)", "",
           "| DB | mutation | batch | N | app mut/s | min–max | peer docs/s | app/peer | "
           "rows written/mut | ceiling mut/s | app/ceiling | server CPU ms/mut (app; peer) | ok |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    goal = []
    for c in cases.values():
        rates = [r["rate"] for r in c.runs]
        app = med(rates)
        pr = peer_runs.get((c.kind, c.batch), [])
        peer = med([r["rate"] for r in pr]) if pr else None
        ceil = med([m / s for s, _, m in c.ceiling]) if c.ceiling else None
        rows_per = sum(c.census.values()) / c.census_n if c.census_n else None
        cpu = med([r["server_cpu_s"] / c.n * 1000 for r in c.runs])
        pcpu = med([r["server_cpu_s"] / r["n"] * 1000 for r in pr if r.get("server_cpu_s") is not None])
        ok = all(r["ok"] for r in c.runs) and all(r.get("ok") for r in pr)
        ratio = app / peer if (app and peer) else None
        out.append(f"| {c.backend.name} | {KIND_LABEL[c.kind]} | {c.batch} | {c.n:,} | **{fmt(app)}** | "
                   f"{fmt(min(rates))}–{fmt(max(rates))} | {fmt(peer)} | {fmt(ratio, 2)} | "
                   f"{fmt(rows_per, 2)} | {fmt(ceil)} | {fmt(app / ceil if ceil else None, 3)} | "
                   f"{fmt(cpu, 2)}; {fmt(pcpu, 2)} | {'yes' if ok else 'NO'} |")
        if c.batch == 100 and ratio is not None:
            goal.append(f"{c.backend.name} {KIND_LABEL[c.kind]}: {ratio:.2f}x the peer "
                        f"({'met' if ratio >= 1.5 else 'MISSED'}; goal 1.5x)")
    out += ["", "Goal (batches of 100, at least 1.5x the peer): " + ("; ".join(goal) or "not measured")]
    out += ["", "Rows written per mutation (census of the committed writes, batch 100 or the largest batch):", ""]
    shown = set()
    for c in sorted(cases.values(), key=lambda c: -c.batch):
        if (c.backend.name, c.kind) in shown or not c.census_n:
            continue
        shown.add((c.backend.name, c.kind))
        parts = ", ".join(f"{t} {v} {n / c.census_n:.2f}" for (t, v), n in
                          sorted(c.census.items(), key=lambda kv: -kv[1]))
        counted = med([sum(r["inserted"].values()) / c.n for r in c.runs])
        stmts = ", ".join(f"{k} {n / c.census_n:.2f}" for k, n in c.statements.most_common())
        out.append(f"- {c.backend.name}, {KIND_LABEL[c.kind]}, batch {c.batch}: "
                   f"{sum(c.census.values()) / c.census_n:.2f} rows ({parts}); "
                   f"rows inserted per mutation counted in the served database: {fmt(counted, 2)}; "
                   f"SQL statements per mutation {sum(c.statements.values()) / c.census_n:.2f} "
                   f"({stmts})")
    if context:
        out += ["", "Context, peers/sql_ceilings.py unchanged (one 400-byte row per document, "
                "commits of 100): " + "; ".join(
                    f"{d['backend']} {d['variant']} {d['rate']:,.0f} rows/s" for d in context)]
    out += ["", "Versions: " + "; ".join(f"{k} {v}" for k, v in vers.items())]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
