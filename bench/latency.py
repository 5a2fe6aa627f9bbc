#!/usr/bin/env python3
"""Clinic latency: a reading saved on one tablet, until another tablet of the same clinic,
with that patient's chart open, shows it. Two headless Chromium devices (own profiles, own
service workers, two staff members of one clinic, both fully synced first) against the app
served as in production (the Procfile's gunicorn line); p50 and p95 over a fixed number of
writes, with the time split into stages, next to the peer (PouchDB live sync between two
pages through pouchdb-server) and a transport ceiling (page -> server -> page over a bare
POST and Server-Sent Events relay), in the same run.

    nice -n 19 .venv/bin/python bench/latency.py            # 50 writes x 3 reps, SQLite and PostgreSQL
    nice -n 19 .venv/bin/python bench/latency.py --quick    # 12 writes x 2 reps, SQLite only

See bench/README.md ("Clinic latency") for what is measured.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.dont_write_bytecode = True  # noqa: E402

from _backends import PostgresBackend, SQLiteBackend, flask_cli  # noqa: E402
from _browser import Device, fmt, med, pct, sign_in, spread, totp_code, until_ready  # noqa: E402
from _paths import BENCH, ROOT, stop_process  # noqa: E402
from _server import Gunicorn  # noqa: E402

T0 = time.monotonic()
PROBE = BENCH / "latency_probe.js"
HEART_RATE = "8867-4"
CELL = {"app": f'#vitals tr[data-code="{HEART_RATE}"] td.value',
        "peer": 'tr[data-code="peer"] td.value', "ceiling": 'tr[data-code="relay"] td.value'}
SHOWN = "() => Boolean(window.__latency.want && window.__latency.want.frame)"
# The stages of the app's trip, each between two timestamps (epoch ms) of one write.
STAGES = (
    ("save -> push sent", "save", "push_start", "device A: the worker takes the form, queues and seals it (after any sync cycle under way)"),
    ("push request", "push_start", "push_end", "HTTP + server: apply and commit"),
    ("push answered -> poke at B", "push_end", "poke", "server: the poke (SQLite: change-log poll; PostgreSQL: NOTIFY)"),
    ("poke -> pull sent", "poke", "pull_start", "device B: page tells worker, sync cycle starts"),
    ("pull request", "pull_start", "pull_end", "HTTP + server: the changes since B's cursor"),
    ("pull answered -> page told", "pull_end", "changed", "device B: store the rows, tell the pages"),
    ("page told -> chart HTML", "changed", "chart_end", "device B: htmx request, the worker renders the chart"),
    ("chart HTML -> value in DOM", "chart_end", "dom", "device B: htmx swap"),
    ("value in DOM -> next frame", "dom", "frame", "device B: the frame that paints it"),
)


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--writes", type=int, default=50, help="writes per series (50)")
    ap.add_argument("--reps", type=int, default=3, help="series per side; medians of their p50/p95 are reported (3)")
    ap.add_argument("--quick", action="store_true", help="12 writes, 2 reps, SQLite only")
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--patients", type=int, default=30, help="flask demo seed --patients (30, over two clinics)")
    ap.add_argument("--gap", type=float, default=1.0, help="seconds of quiet after each write is seen (1.0)")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-ceiling", action="store_true")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (Procfile WEB_CONCURRENCY)")
    ap.add_argument("--threads", type=int, default=128, help="threads per worker (GUNICORN_THREADS)")
    ap.add_argument("--app-port", type=int, default=18600)
    ap.add_argument("--relay-port", type=int, default=18605)
    ap.add_argument("--peer-port", type=int, default=18620)
    ap.add_argument("--pg-port", type=int, default=55452, help="throwaway PostgreSQL cluster (55452)")
    ap.add_argument("--work", default="/tmp/bench-latency", help="scratch folder (latency/ in it is emptied)")
    a = ap.parse_args()
    if a.quick:
        a.writes, a.reps, a.backends = 12, min(a.reps, 2), "sqlite"
    return a


def values(n: int, start: int):
    """Heart rates in 40..189, never the same twice in a row."""
    return [str(40 + ((start + i) * 37) % 150) for i in range(n)]


def now_ms(page) -> float:
    return page.evaluate("() => performance.timeOrigin + performance.now()")


def timing(req) -> tuple[float, float]:
    t = req.timing
    return t["startTime"], t["startTime"] + t["responseEnd"]


def first_after(times, after: float):
    later = [t for t in times if t >= after]
    return min(later) if later else None


def device(pw, run: Path, name: str) -> Device:
    dev = Device(pw, run / "profiles" / name)
    dev.context.add_init_script(path=str(PROBE))
    return dev


# ---- the app -----------------------------------------------------------------------------

class AppSide:
    """Two signed-in, synced devices of one clinic; B has the patient's chart open."""

    def __init__(self, pw, run: Path, base: str, writer: dict, reader: dict, patient_id: str):
        self.base, self.patient_id = base, patient_id
        self.chart = f"{base}/patients/{patient_id}"
        self.a, self.b = device(pw, run, "app-a"), device(pw, run, "app-b")
        for dev, user in ((self.a, writer), (self.b, reader)):
            sign_in(dev.page, base, user, totp_code(user))
            until_ready(dev.page, user)
        self.open_chart()

    def open_chart(self):
        for _ in range(50):
            answer = self.b.page.goto(self.chart)
            if answer is not None and answer.headers.get("x-rendered-by") == "service-worker":
                return
            self.b.page.wait_for_timeout(300)
        raise RuntimeError("device B does not render the chart itself")

    def write(self, value: str, gap_s: float) -> dict:
        a, b = self.a.page, self.b.page
        answer = a.goto(f"{self.chart}/vitals")
        if answer is None or answer.headers.get("x-rendered-by") != "service-worker":
            raise RuntimeError("device A's vitals form did not come from its worker")
        a.get_by_label("Heart rate").fill(value)
        # The clinician is at the chart: a key now and then keeps the device's idle lock away,
        # which would otherwise take the open chart to the unlock page after some minutes.
        b.keyboard.press("Shift")
        b.evaluate("([s, t]) => window.__latency.watch(s, t)", [CELL["app"], value])
        a.get_by_role("button", name="Save readings").click()
        seen = True
        try:
            b.wait_for_function(SHOWN, timeout=30_000, polling="raf")
        except Exception:  # noqa: BLE001 (Playwright's TimeoutError): counted as missed
            seen = False
        b.wait_for_timeout(gap_s * 1000)  # quiet; also lets the request events arrive
        save = a.evaluate("() => window.__latency.submits.at(-1)")
        lat = b.evaluate("() => ({want: window.__latency.want, pokes: window.__latency.pokes,"
                         " changed: window.__latency.changed})")
        want = lat["want"] or {}  # None if the page was replaced (then the write counts as missed)
        seen = seen and bool(want)
        t = {"save": save, "dom": want.get("dom"), "frame": want.get("frame")}
        pushes = sorted(timing(r) for r in self.a.requests
                        if r.service_worker is not None and r.url.endswith("/sync/v1/push") and timing(r)[0] >= save)
        if pushes:
            t["push_start"], t["push_end"] = pushes[0]
            # What A's worker had on the wire between the Save and its push: a push waits for
            # a sync cycle already under way (one flusher at a time).
            t["a_busy"] = sorted(r.url.rsplit("/", 2)[-2] + "/" + r.url.rsplit("/", 1)[-1]
                                 for r in self.a.requests if r.service_worker is not None
                                 and timing(r)[0] < t["push_start"] and timing(r)[1] > save
                                 and r.url.rsplit("/", 1)[-1] != "events")
        t["poke"] = first_after(lat["pokes"], save)
        if t["poke"] is not None:
            pulls = sorted(timing(r) for r in self.b.requests if r.service_worker is not None
                           and r.url.endswith("/sync/v1/pull") and timing(r)[0] >= t["poke"])
            if pulls:
                t["pull_start"], t["pull_end"] = pulls[0]
        t["changed"] = first_after(lat["changed"], save)
        if t["changed"] is not None:
            charts = sorted(timing(r) for r in self.b.requests if r.service_worker is None
                            and r.url.split("?", 1)[0] == self.chart and r.method == "GET"
                            and timing(r)[0] >= t["changed"])
            if charts:
                t["chart_start"], t["chart_end"] = charts[0]
        self.a.requests.clear()
        self.b.requests.clear()
        return {"seen": seen, "ms": (t["frame"] - save) if seen and t["frame"] else None,
                "dom_ms": (t["dom"] - save) if seen and t["dom"] else None, "t": t}

    def close(self):
        self.a.close()
        self.b.close()


# ---- the peer and the ceiling --------------------------------------------------------------

class PeerSide:
    """Two pages, each with its own PouchDB filled from pouchdb-server, in live sync with it."""

    def __init__(self, pw, run: Path, peer, patient_id: str):
        self.patient_id = patient_id
        self.a, self.b = device(pw, run, "peer-a"), device(pw, run, "peer-b")
        script = (BENCH / "latency_peer.js").read_text()
        for name, dev in (("a", self.a), ("b", self.b)):
            dev.page.goto(peer.page_url)
            dev.page.add_script_tag(content=script)
            info = dev.page.evaluate("([r, n]) => window.peerLive.open(r, n)", [peer.remote, f"clinic-{name}"])
            log(f"  peer page {name}: {info['docs']:,} documents held, live sync on")

    def write(self, value: str, gap_s: float) -> dict:
        obs_id = str(uuid.uuid4())
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        doc = {"_id": f"rec/{self.patient_id}/observation/{obs_id}", "type": "observation", "version": 1,
               "record": {"id": obs_id, "patient_id": self.patient_id, "code": HEART_RATE, "value": int(value),
                          "unit": "/min", "effective_at": at, "created_at": at}}
        self.b.page.evaluate("([s, t]) => window.__latency.watch(s, t)", [CELL["peer"], value])
        save = self.a.page.evaluate("(doc) => window.peerLive.put(doc)", doc)
        return wait_seen(self.b.page, save, gap_s)

    def close(self):
        self.a.close()
        self.b.close()


class CeilingSide:
    def __init__(self, pw, run: Path, port: int):
        self.log = open(run / "relay.log", "ab")
        self.proc = subprocess.Popen([sys.executable, str(BENCH / "_relay.py"), str(port)],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        time.sleep(0.5)
        self.a, self.b = device(pw, run, "relay-a"), device(pw, run, "relay-b")
        for dev in (self.a, self.b):
            dev.page.goto(f"http://127.0.0.1:{port}/")
        self.b.page.wait_for_timeout(300)  # the stream open

    def write(self, value: str, gap_s: float) -> dict:
        self.b.page.evaluate("([s, t]) => window.__latency.watch(s, t)", [CELL["ceiling"], value])
        save = self.a.page.evaluate(
            "(v) => { const t = performance.timeOrigin + performance.now(); window.relayWrite(v); return t; }", value)
        return wait_seen(self.b.page, save, gap_s)

    def close(self):
        self.a.close()
        self.b.close()
        stop_process(self.proc, self.log)


def wait_seen(page, save: float, gap_s: float) -> dict:
    seen = True
    try:
        page.wait_for_function(SHOWN, timeout=30_000, polling="raf")
    except Exception:  # noqa: BLE001
        seen = False
    want = page.evaluate("() => window.__latency.want")
    page.wait_for_timeout(gap_s * 1000)
    return {"seen": seen, "ms": want["frame"] - save if seen else None,
            "dom_ms": want["dom"] - save if seen else None, "t": {"save": save, **want}}


def series(side, n: int, start: int, gap_s: float, label: str) -> dict:
    writes = []
    for i, value in enumerate(values(n, start)):
        writes.append(side.write(value, gap_s))
    ms = [w["ms"] for w in writes if w["ms"] is not None]
    out = {"p50": pct(ms, 50), "p95": pct(ms, 95), "max": max(ms) if ms else None,
           "missed": sum(1 for w in writes if not w["seen"]), "writes": writes}
    log(f"  {label}: p50 {fmt(out['p50'])} ms, p95 {fmt(out['p95'])} ms, max {fmt(out['max'])} ms, "
        f"missed {out['missed']}")
    return out


# ---- set-up of one database ------------------------------------------------------------------

def clinic_on(backend, patients: int) -> dict:
    backend.create("run")
    urls = backend.urls("run")
    flask_cli(urls, "db", "upgrade")
    users = json.loads(flask_cli(urls, "demo", "seed", "--patients", str(patients), "--json", timeout=900))
    writer = next(u for u in users if u["role"] == "nurse")
    reader = next(u for u in users if u["role"] == "clinician" and u["clinic_id"] == writer["clinic_id"])
    con = backend.connect(urls[0])
    try:
        cur = con.cursor()
        mark = "?" if backend.name == "sqlite" else "%s"
        cur.execute(f"SELECT id FROM patient WHERE clinic_id = {mark} ORDER BY family_name, id LIMIT 1",
                    (writer["clinic_id"],))
        patient_id = cur.fetchone()[0]
    finally:
        con.close()
    return {"urls": urls, "writer": writer, "reader": reader, "patient_id": patient_id}


# ---- report ------------------------------------------------------------------------------

def stage_medians(app_series: list[dict]) -> list[tuple]:
    rows = []
    writes = [w for s in app_series for w in s["writes"] if w["seen"]]
    for label, start, end, what in STAGES:
        d = [w["t"][end] - w["t"][start] for w in writes
             if w["t"].get(start) is not None and w["t"].get(end) is not None]
        rows.append((label, what, med(d), pct(d, 95), len(d)))
    return rows


def render(args, results: dict, meta: dict) -> str:
    lines = [f"Clinic latency, {meta['date']}, commit {meta['commit']}, {args.writes} writes x {args.reps} reps; "
             f"p50/p95 per series, median over series (min–max)", "",
             "| DB | who | what is timed | p50 ms | min–max | p95 ms | min–max | max ms | missed |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    what = {"app": "A's Save -> B's open chart shows the value (next frame)",
            "peer": "PouchDB put in A -> B's live changes feed writes the cell (next frame)",
            "ceiling": "fetch POST in A -> relay -> SSE in B writes the cell (next frame)"}
    for key, per in results["series"].items():
        db, who = key.split(":")
        p50 = [s["p50"] for s in per]
        p95 = [s["p95"] for s in per]
        lines.append(f"| {db} | {who} | {what[who]} | **{fmt(med(p50))}** | {spread(p50)} | **{fmt(med(p95))}** | "
                     f"{spread(p95)} | {fmt(max((s['max'] or 0) for s in per))} | {sum(s['missed'] for s in per)} |")
    for db, rows in results["stages"].items():
        lines += ["", f"Where the app's time goes on {db} (every write seen, all series):", "",
                  "| stage | what happens | median ms | p95 ms | writes |", "|---|---|---:|---:|---:|"]
        for label, desc, m, p, n in rows:
            lines.append(f"| {label} | {desc} | {fmt(m)} | {fmt(p)} | {n} |")
        writes = [w["t"] for s in results["series"][f"{db}:app"] for w in s["writes"] if w["t"].get("push_start")]
        idle = [t["push_start"] - t["save"] for t in writes if not t.get("a_busy")]
        busy = [t["push_start"] - t["save"] for t in writes if t.get("a_busy")]
        lines += ["", f"Save -> push sent on {db}: median {fmt(med(idle))} ms when A's worker had nothing on the wire "
                  f"({len(idle)} writes), {fmt(med(busy))} ms when a pull or report of a sync cycle already under "
                  f"way was ({len(busy)} writes; one flusher at a time, the push waits for it)."]
    return "\n".join(lines) + "\n"


def main():
    args = parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(args.work)
    run = work / "latency"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "commit": commit,
            "python": platform.python_version(), "args": vars(args)}
    results = {"series": {}, "stages": {}}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    sides_done = False
    with sync_playwright() as pw:
        for index, name in enumerate(backends):
            backend = SQLiteBackend(run) if name == "sqlite" else PostgresBackend(run, args.pg_port)
            server = app = peer = ceiling = peer_server = None
            try:
                log(f"{name}: migrating and seeding the demo clinics ({args.patients} patients)")
                clinic = clinic_on(backend, args.patients)
                with_sides = not sides_done
                if with_sides and not args.no_peer:
                    peer_server = start_peer(run, args.peer_port, backend, clinic)
                server = Gunicorn(clinic["urls"], args.app_port + index, run / f"gunicorn-{name}.log",
                                  args.workers, args.threads)
                base = f"http://127.0.0.1:{args.app_port + index}"
                log(f"{name}: signing in two devices and syncing them")
                app = AppSide(pw, run, base, clinic["writer"], clinic["reader"], clinic["patient_id"])
                if peer_server:
                    peer = PeerSide(pw, run, peer_server, clinic["patient_id"])
                if with_sides and not args.no_ceiling:
                    ceiling = CeilingSide(pw, run, args.relay_port)
                sides_done = True
                for rep in range(args.reps):
                    log(f"{name}: repetition {rep + 1}/{args.reps}")
                    start = rep * args.writes * 3
                    results["series"].setdefault(f"{name}:app", []).append(
                        series(app, args.writes, start, args.gap, "app"))
                    if peer:
                        results["series"].setdefault("node:peer", []).append(
                            series(peer, args.writes, start + args.writes, args.gap, "peer"))
                    if ceiling:
                        results["series"].setdefault("none:ceiling", []).append(
                            series(ceiling, args.writes, start + 2 * args.writes, args.gap, "ceiling"))
                results["stages"][name] = stage_medians(results["series"][f"{name}:app"])
            finally:
                for side in (app, peer, ceiling):
                    if side:
                        side.close()
                if peer_server:
                    peer_server.stop()
                if server:
                    server.stop()
                backend.close()
    order = sorted(results["series"], key=lambda k: (k.split(":")[1] != "app", k))
    results["series"] = {k: results["series"][k] for k in order}
    table = render(args, results, meta)
    (run / "results.md").write_text(table)
    (run / "results.json").write_text(json.dumps({"meta": meta, **results}, indent=1, default=str))
    print(table)
    log(f"done; results.md and results.json in {run}")


def start_peer(run: Path, port: int, backend, clinic: dict):
    """pouchdb-server holding what a device of the clinic pulls (made from the SQLite files)."""
    if backend.name != "sqlite":
        return None
    from _clinic import _export_pull
    from _peer_browser import PeerClinic
    folder = Path(clinic["urls"][0][len("sqlite:///"):]).parent
    changes = _export_pull(folder, clinic["writer"]["username"], log)
    return PeerClinic(run / "peer", port, changes, log)


if __name__ == "__main__":
    main()
