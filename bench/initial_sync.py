#!/usr/bin/env python3
"""Initial sync: a new tablet, from opening the sign-in page until it works offline (its
service worker has pulled the clinic's subset into IndexedDB, encrypted under the person's
data key, and the page says `offlineReady`), in headless Chromium; seconds and bytes on the
wire, next to the peer (PouchDB replicating the same records from pouchdb-server into
IndexedDB, as shared/peers measures it) and the ceilings (the same rows parsed, encrypted or
not, and put into IndexedDB in the app's shape, nothing else), all in the same run.

    nice -n 19 .venv/bin/python bench/initial_sync.py            # 5,000 patients, 100,000 observations
    nice -n 19 .venv/bin/python bench/initial_sync.py --quick    # 300 patients, 6,000 observations

See bench/README.md ("Initial sync") for what is measured and how the data is made.
"""
from __future__ import annotations

import argparse
import gzip
import json
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

sys.dont_write_bytecode = True  # noqa: E402

from _browser import (Device, WorkerProfiler, fmt, med, on_wire, proc_cpu, sign_in, spread,  # noqa: E402
                      store_counts, summarize_profile, totp_code, until_ready)
from _clinic import Spec, prepare  # noqa: E402
from _paths import BENCH  # noqa: E402
from _server import Gunicorn  # noqa: E402

T0 = time.monotonic()
PAGE = 2000  # SYNC_BROWSER_PULL_PAGE: the records per pull the worker asks for
CEILINGS = (("plain", False, "put"), ("encrypted", True, "put"))
CEILING_LABELS = {
    "plain": f"ceiling: parse + put, {PAGE:,} rows/transaction, strict (no encryption)",
    "encrypted": "ceiling: parse + AES-GCM encrypt + put, as above",
}


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=5000, help="patients of the clinic (5000)")
    ap.add_argument("--observations", type=int, default=100_000, help="observations, spread evenly (100000)")
    ap.add_argument("--visits", type=int, default=2, help="past visits per patient (2)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions; the median is reported (3)")
    ap.add_argument("--quick", action="store_true", help="300 patients, 6,000 observations, 2 reps")
    ap.add_argument("--adapter", default="idb", help="PouchDB adapter of the peer (idb, its default; or indexeddb)")
    ap.add_argument("--no-peer", action="store_true", help="skip the PouchDB peer")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the IndexedDB ceilings")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed runs, one more app run with the service worker's thread sampled "
                         "by the V8 profiler (CDP); prints where its time goes")
    ap.add_argument("--workers", type=int, default=2, help="gunicorn workers (Procfile WEB_CONCURRENCY)")
    ap.add_argument("--threads", type=int, default=128, help="threads per worker (GUNICORN_THREADS)")
    ap.add_argument("--app-port", type=int, default=18500)
    ap.add_argument("--peer-port", type=int, default=18501)
    ap.add_argument("--work", default="/tmp/bench-browser",
                    help="scratch folder: cache/ (seeded databases, kept) and initial_sync/ (emptied)")
    a = ap.parse_args()
    if a.quick:
        a.patients, a.observations, a.reps = 300, 6000, min(a.reps, 2)
    return a


# ---- one repetition of each side --------------------------------------------------------

def app_run(pw, run: Path, rep, base: str, user: dict, server: Gunicorn, profile: bool = False) -> dict:
    code = totp_code(user)  # may wait for a fresh 30 s step: before the clock starts
    dev = Device(pw, run / "profiles" / f"app-{rep}")
    try:
        profiler = WorkerProfiler(dev.context, dev.page) if profile else None
        srv0, cpu0 = server.cpu_seconds(), dev.cpu_seconds()
        since = time.time() * 1000
        t0 = time.perf_counter()
        sign_in(dev.page, base, user, code)
        t_signed = time.perf_counter()
        if profiler:
            profiler.start(dev.page)
        asked = until_ready(dev.page, user)
        t1 = time.perf_counter()
        sampled = summarize_profile(profiler.stop(dev.page)) if profiler else None
        srv1, cpu1 = server.cpu_seconds(), dev.cpu_seconds()
        seconds = t1 - t0
        store = store_counts(dev.page) or {}
        usage = dev.page.evaluate("async () => (await navigator.storage.estimate()).usage")
        pulls = sorted((r for r in dev.requests if r.url.endswith("/sync/v1/pull")),
                       key=lambda r: r.timing["startTime"])
        wire_all = on_wire(dev.requests, since)
        wire_pull = on_wire(pulls)
        # The pull phase from the worker's requests: waiting for the server (request sent to
        # first byte), receiving, and the device's own time between one page's last byte and
        # the next request (parse, encrypt, store, count, report progress).
        t = [(r.timing["startTime"], r.timing["responseStart"], r.timing["responseEnd"]) for r in pulls]
        first = t[0][0] if t else None
        last_end = max(s + e for s, _, e in t) if t else None
        wait = sum(rs for _, rs, _ in t) / 1000
        recv = sum(e - rs for _, rs, e in t) / 1000
        gaps = sum(max(0.0, t[i + 1][0] - (t[i][0] + t[i][2])) for i in range(len(t) - 1)) / 1000
        return {
            "rep": rep, "seconds": seconds, "signed_in_s": t_signed - t0,
            "setup_s": (first - since) / 1000 if first else None,
            "pull_s": (last_end - first) / 1000 if t else None,
            "tail_s": (since + seconds * 1000 - last_end) / 1000 if t else None,
            "server_wait_s": wait, "receive_s": recv, "device_gaps_s": gaps,
            "pull_requests": len(pulls), "wire": wire_all, "wire_pull": wire_pull,
            "rows": store.get("rows"), "initial_sync": store.get("initial_sync"),
            "storage_usage": usage, "asked_password": asked,
            "server_cpu_s": srv1 - srv0, "browser_cpu_s": cpu1 - cpu0, "url": dev.page.url,
            "profile": sampled,
        }
    finally:
        dev.close()


def peer_run(pw, run: Path, rep: int, peer, adapter: str) -> dict:
    dev = Device(pw, run / "profiles" / f"peer-{rep}")
    try:
        dev.page.goto(peer.page_url)
        dev.page.wait_for_function("() => window.benchReady === true")
        since = time.time() * 1000
        srv0, cpu0 = proc_cpu([peer.pid]), dev.cpu_seconds()
        # The peer's own measurement (peers/browser/bench_page.js): replicate() from the
        # server into a new local database, one-shot, PouchDB's defaults.
        r = dev.page.evaluate("([u, a]) => window.pullBench(u, a)", [peer.remote, adapter])
        srv1, cpu1 = proc_cpu([peer.pid]), dev.cpu_seconds()
        return {"rep": rep, "seconds": r["ms"] / 1000, "docs_written": r["docs_written"],
                "doc_count": r["doc_count"], "adapter": r["adapter"], "ok": r["ok"],
                "wire": on_wire(dev.requests, since), "server_cpu_s": srv1 - srv0,
                "browser_cpu_s": cpu1 - cpu0}
    finally:
        dev.close()


def ceiling_run(pw, run: Path, rep: int, peer, pages_text: str) -> dict:
    dev = Device(pw, run / "profiles" / f"ceiling-{rep}")
    try:
        dev.page.goto(peer.page_url)
        dev.page.wait_for_function("() => window.benchReady === true")
        dev.page.add_script_tag(path=str(BENCH / "browser_ceilings.js"))
        dev.page.wait_for_function("() => window.benchCeilingsReady === true")
        dev.page.evaluate("(t) => window.benchSetPages(t)", pages_text)
        out = {"rep": rep}
        for name, encrypt, mode in CEILINGS:
            cpu0 = dev.cpu_seconds()
            r = dev.page.evaluate("([e, d, m]) => window.storeCeiling(e, d, m)", [encrypt, "strict", mode])
            out[name] = {"seconds": r["ms"] / 1000, "count": r["count"], "browser_cpu_s": dev.cpu_seconds() - cpu0}
        return out
    finally:
        dev.close()


# ---- report ---------------------------------------------------------------------------

def mb(n):
    return None if n is None else n / 1e6


def render(args, manifest, apps, peers, ceilings, vers, profiled=None) -> str:
    n = manifest["changes"]
    by = manifest["changes_by_entity"]
    app_s = [a["seconds"] for a in apps]
    peer_s = [p["seconds"] for p in peers]
    lines = []
    lines.append(f"Initial sync of {n:,} records ({', '.join(f'{v:,} {k}' for k, v in by.items())}); "
                 f"clinic of {args.patients:,} patients, {args.observations:,} observations; "
                 f"{len(apps)} repetitions, median and min–max.")
    lines.append("")
    lines.append("| what | seconds | min–max | records/s | MB down | MB up | requests | server CPU s | browser CPU s | ok |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")

    def row(label, secs, wire_down, wire_up, reqs, srv, cpu, ok):
        m = med(secs)
        lines.append(f"| {label} | **{fmt(m)}** | {spread(secs)} | {fmt(n / m if m else None, 0)} | "
                     f"{fmt(mb(med(wire_down)), 1)} | {fmt(mb(med(wire_up)), 2)} | {fmt(med(reqs), 0)} | "
                     f"{fmt(med(srv))} | {fmt(med(cpu))} | {ok} |")

    ok_app = all(a["rows"] == n and (a["initial_sync"] or {}).get("done") for a in apps)
    row("app: sign-in page → offline-ready (all requests)", app_s, [a["wire"]["down"] for a in apps],
        [a["wire"]["up"] for a in apps], [a["wire"]["requests"] for a in apps],
        [a["server_cpu_s"] for a in apps], [a["browser_cpu_s"] for a in apps],
        "yes" if ok_app else f"NO (rows {[a['rows'] for a in apps]})")
    row("app: the pull phase only (first to last /sync/v1/pull)", [a["pull_s"] for a in apps],
        [a["wire_pull"]["down"] for a in apps], [a["wire_pull"]["up"] for a in apps],
        [a["pull_requests"] for a in apps], [], [], "")
    if peers:
        ok_peer = all(p["ok"] and p["doc_count"] == n for p in peers)
        row(f"peer: PouchDB replicate() → IndexedDB ({peers[0]['adapter']})", peer_s,
            [p["wire"]["down"] for p in peers], [p["wire"]["up"] for p in peers],
            [p["wire"]["requests"] for p in peers], [p["server_cpu_s"] for p in peers],
            [p["browser_cpu_s"] for p in peers], "yes" if ok_peer else "NO")
    for key, label in CEILING_LABELS.items():
        if ceilings:
            secs = [c[key]["seconds"] for c in ceilings]
            row(label, secs, [], [], [], [], [c[key]["browser_cpu_s"] for c in ceilings],
                "yes" if all(c[key]["count"] == n for c in ceilings) else "NO")
    lines.append("")
    m_app, m_peer = med(app_s), med(peer_s)
    goal_time = m_app is not None and m_app < 30
    goal_peer = bool(m_peer) and m_app * 3 <= m_peer
    lines.append(f"Goal: under 30 s — **{'met' if goal_time else 'missed'}** ({fmt(m_app)} s); "
                 f"three times faster than the peer — **{'met' if goal_peer else 'missed'}** "
                 f"(peer/app = {fmt(m_peer / m_app if m_peer and m_app else None, 2)}; needs 3.0).")
    lines.append("")
    lines.append("Where the app's time goes (medians, seconds):")
    lines.append("")
    lines.append("| sign-in page → signed in | signed in → first pull request | pull phase | "
                 "of which: server (request → first byte) | receiving | device between pages | "
                 "last page → offline-ready | pull requests | MB stored (storage estimate) |")
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines.append(f"| {fmt(med([a['signed_in_s'] for a in apps]))} | "
                 f"{fmt(max(0.0, med([a['setup_s'] - a['signed_in_s'] for a in apps if a['setup_s'] is not None]) or 0.0), 2)} | "
                 f"{fmt(med([a['pull_s'] for a in apps]))} | {fmt(med([a['server_wait_s'] for a in apps]))} | "
                 f"{fmt(med([a['receive_s'] for a in apps]))} | {fmt(med([a['device_gaps_s'] for a in apps]))} | "
                 f"{fmt(max(0.0, med([a['tail_s'] for a in apps]) or 0.0), 2)} | {fmt(med([a['pull_requests'] for a in apps]), 0)} | "
                 f"{fmt(mb(med([a['storage_usage'] for a in apps])), 1)} |")
    lines.append("")
    gz = manifest.get("gzip")
    if gz:
        lines.append(f"The same {n:,} records as pages of {PAGE:,} are {gz['raw'] / 1e6:.1f} MB of JSON, "
                     f"{gz['gzip'] / 1e6:.1f} MB gzip-compressed (level 6). The app's pull answers are compressed "
                     "(flask-compress: zstd for Chromium), pouchdb-server's too (express `compression`, gzip): "
                     "MB down are the bytes on the wire, compressed.")
        lines.append("")
    if profiled:
        p = profiled["profile"]
        lines.append(f"Service worker's JavaScript thread during one more, profiled, app run "
                     f"({fmt(profiled['seconds'])} s from the sign-in page; {fmt(p['seconds'])} s sampled from sign-in "
                     "to offline-ready; self time; `(idle)` = waiting for IndexedDB, the network or WebCrypto):")
        lines.append("")
        lines.append("| function (file:line) | s | share |")
        lines.append("|---|---:|---:|")
        for name, secs, share in p["functions"]:
            lines.append(f"| `{name}` | {secs:.2f} | {share:.0%} |")
        lines.append("")
        lines.append("By file: " + "; ".join(f"{name} {secs:.2f} s ({share:.0%})" for name, secs, share in p["files"][:10]))
        lines.append("")
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    return "\n".join(lines)


def versions() -> dict:
    import subprocess
    out = {"python": platform.python_version()}
    for p in ("playwright", "flask", "gunicorn", "sqlalchemy"):
        try:
            out[p] = version(p)
        except Exception:  # noqa: BLE001
            out[p] = None
    try:
        out["chromium"] = subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True,
                                         text=True, timeout=20).stdout.strip().split(" built")[0]
    except Exception:  # noqa: BLE001
        out["chromium"] = None
    return out


def main():
    args = parse_args()
    work = Path(args.work)
    run = work / "initial_sync"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    spec = Spec(patients=args.patients, observations=args.observations, visits=args.visits, visit_every=1)
    manifest = prepare(work / "cache", spec, run / "db", log)
    log(f"clinic {spec.key()}: {manifest['changes']:,} records for a device of {manifest['nurse']} "
        f"(seeded once in {manifest['build_seconds']:.0f} s)")
    changes = json.loads(Path(manifest["changes_file"]).read_text())
    user = next(u for u in manifest["users"] if u["username"] == manifest["nurse"])

    from playwright.sync_api import sync_playwright
    server = peer = None
    apps, peers, ceilings = [], [], []
    profiled = None
    try:
        server = Gunicorn(tuple(manifest["urls"]), args.app_port, run / "gunicorn.log",
                          args.workers, args.threads)
        base = f"http://127.0.0.1:{args.app_port}"
        if not (args.no_peer and args.no_ceiling):
            from _peer_browser import PeerClinic
            peer = PeerClinic(Path(manifest["cache_dir"]) / "peer", args.peer_port, changes, log)
        pages = [json.dumps(changes[i:i + PAGE], separators=(",", ":")) for i in range(0, len(changes), PAGE)]
        manifest["gzip"] = {"raw": sum(len(t.encode()) for t in pages),
                            "gzip": sum(len(gzip.compress(t.encode(), 6)) for t in pages)}
        pages_text = json.dumps(pages)
        del changes, pages
        with sync_playwright() as pw:
            for rep in range(1, args.reps + 1):
                a = app_run(pw, run, rep, base, user, server)
                apps.append(a)
                log(f"rep {rep} app: {a['seconds']:.2f} s (pull {a['pull_s'] or 0:.2f} s, "
                    f"{a['pull_requests']} pulls, {a['wire']['down'] / 1e6:.1f} MB down), rows {a['rows']}")
                if not args.no_peer:
                    p = peer_run(pw, run, rep, peer, args.adapter)
                    peers.append(p)
                    log(f"rep {rep} peer: {p['seconds']:.2f} s, {p['doc_count']} docs, "
                        f"{p['wire']['down'] / 1e6:.1f} MB down, {p['wire']['requests']} requests")
                if not args.no_ceiling:
                    c = ceiling_run(pw, run, rep, peer, pages_text)
                    ceilings.append(c)
                    log(f"rep {rep} ceilings: " + ", ".join(
                        f"{k} {c[k]['seconds']:.2f} s" for k, _, _ in CEILINGS))
            if args.profile:
                profiled = app_run(pw, run, "profiled", base, user, server, profile=True)
                log(f"profiled app run: {profiled['seconds']:.2f} s")
    finally:
        if peer is not None:
            peer.stop()
        if server is not None:
            server.stop()
    vers = versions()
    table = render(args, manifest, apps, peers, ceilings, vers, profiled)
    print(table)
    (run / "results.md").write_text(table + "\n")
    (run / "results.json").write_text(json.dumps({
        "args": vars(args), "manifest": {k: v for k, v in manifest.items() if k != "users"},
        "app": apps, "peer": peers, "ceilings": ceilings, "profiled": profiled, "versions": vers,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=1, default=str))
    log(f"results in {run / 'results.md'} and results.json")


if __name__ == "__main__":
    main()
