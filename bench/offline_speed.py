#!/usr/bin/env python3
"""Offline speed in the browser: a tablet that holds a clinic of 20,000 patients, with the
network off, opening the chart of a patient with 200 observations (a page the service
worker renders from IndexedDB) and searching patients, each N times, warm and right after
the worker was stopped (CDP ServiceWorker.stopAllWorkers before every open or query); p50
and p95 of each series, next to the peer (PouchDB reading the same records from its
IndexedDB) and the ceiling (the same rows read from IndexedDB in the app's shape, decrypted
or not, nothing else), in the same run.

    nice -n 19 .venv/bin/python bench/offline_speed.py           # 20,000 patients, 100 opens/queries, 3 reps
    nice -n 19 .venv/bin/python bench/offline_speed.py --quick   # 2,000 patients, 30 opens/queries, 2 reps

See bench/README.md ("Offline speed") for what is measured and how the data is made.
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.dont_write_bytecode = True  # noqa: E402

from _browser import (Device, WorkerProfiler, fmt, med, pct, sign_in, spread,  # noqa: E402
                      store_counts, summarize_profile, totp_code, until_ready)
from _clinic import Spec, prepare  # noqa: E402
from _paths import BENCH  # noqa: E402
from _server import Gunicorn  # noqa: E402
from initial_sync import PAGE, versions  # noqa: E402

T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--patients", type=int, default=20_000, help="patients on the device (20000)")
    ap.add_argument("--chart-obs", type=int, default=200, help="observations of the chart's patient (200)")
    ap.add_argument("--opens", type=int, default=100, help="chart opens per series (100)")
    ap.add_argument("--queries", type=int, default=100, help="searches per series (100)")
    ap.add_argument("--side-queries", type=int, default=30,
                    help="searches per series for the peer and the ceilings: the first N of the same queries "
                         "(30; each of theirs scans every patient, as the app's does)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of every series; medians of their p50/p95 (3)")
    ap.add_argument("--quick", action="store_true", help="2,000 patients, 30 opens and queries, 2 reps")
    ap.add_argument("--adapter", default="idb", help="PouchDB adapter of the peer (idb)")
    ap.add_argument("--no-peer", action="store_true", help="skip the PouchDB peer")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the IndexedDB ceilings")
    ap.add_argument("--no-cold", action="store_true", help="skip the series after a worker restart")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed runs, sample the service worker's thread (V8 profiler) over one "
                         "more warm series of chart opens and of searches")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--app-port", type=int, default=18510)
    ap.add_argument("--peer-port", type=int, default=18511)
    ap.add_argument("--work", default="/tmp/bench-browser",
                    help="scratch folder: cache/ (seeded databases, kept) and offline_speed/ (emptied)")
    a = ap.parse_args()
    if a.quick:
        a.patients, a.opens, a.queries, a.side_queries, a.reps = 2000, 30, 30, 30, min(a.reps, 2)
    return a


def make_queries(changes: list[dict], n: int) -> list[str]:
    """Seeded queries as a person types them, each matching at least one patient: a family
    name, given and family name, the first 3 letters of a family name, an MRN, a phone."""
    rng = random.Random(4242)
    patients = [c["record"] for c in changes if c["entity"] == "patient"]
    out = []
    for i in range(n):
        p = rng.choice(patients)
        kind = i % 5
        if kind == 0:
            out.append(p["family_name"])
        elif kind == 1:
            out.append(f"{p['given_name']} {p['family_name']}".lower())
        elif kind == 2:
            out.append(p["family_name"][:3].lower())
        elif kind == 3:
            mrn = next((x["value"] for x in p.get("identifiers", []) if x["system"] == "mrn"), p["family_name"])
            out.append(mrn)
        else:
            out.append((p.get("phone") or "").replace(" ", "") or p["given_name"])
    return out


# ---- the app's device ---------------------------------------------------------------------

NAV_TIMING = """() => {
  const n = performance.getEntriesByType('navigation')[0];
  return {worker_start: n.workerStart, fetch_start: n.fetchStart, response_start: n.responseStart,
          response_end: n.responseEnd, dcl: n.domContentLoadedEventEnd, load: n.loadEventEnd};
}"""

SEARCH = """async (q) => {
  // What htmx sends for the search field (hx-get="/patients", hx-target="#results").
  document.dispatchEvent(new KeyboardEvent('keydown'));  // typing: the idle lock restarts
  const t0 = performance.now();
  const r = await fetch('/patients?q=' + encodeURIComponent(q), {headers: {
    'HX-Request': 'true', 'HX-Target': 'results', 'HX-Trigger': 'q', 'HX-Current-URL': location.href}});
  const html = await r.text();
  const ms = performance.now() - t0;
  const results = (html.match(/class="result"/g) || []).length;
  const ok = r.status === 200 && r.headers.get('x-rendered-by') === 'service-worker' && results > 0;
  return {ms, by: r.headers.get('x-rendered-by'), status: r.status, results, timing: r.headers.get('server-timing'),
          sample: ok ? null : `${r.status} ${r.headers.get('HX-Redirect') || ''} ${html.slice(0, 300)}`};
}"""


# Added to every page of the app's device before its own scripts: notes when the worker has
# handed this page the data key (static/js/device.js keeps it for a restarted worker).
KEY_WATCH = """navigator.serviceWorker && navigator.serviceWorker.addEventListener('message', (e) => {
  if (e.data && e.data.type === 'data-key') window.__benchKeyAt = performance.now();
});"""
KEY_HELD = "() => window.__benchKeyAt > 0"
# A key pressed in the app's page: the person is still there. The peer's and the ceilings'
# series take minutes on a loaded machine, past the idle lock's five; without this the app's
# next series would meet the lock screen.
STILL_HERE = "() => document.dispatchEvent(new KeyboardEvent('keydown'))"


class KeepAwake:
    def __init__(self, page, every_s: float = 30):
        self.page, self.every, self.last = page, every_s, 0.0

    def __call__(self) -> None:
        if time.monotonic() - self.last > self.every:
            self.page.evaluate(STILL_HERE)
            self.last = time.monotonic()


class Workers:
    """Stops the page's service worker (CDP ServiceWorker domain) and waits until it has
    stopped (a 'stopped' status seen after the request; asked again if it does not come)."""

    def __init__(self, context, page):
        self.page = page
        self.cdp = context.new_cdp_session(page)
        self.stops = 0
        self.trace: list[str] = []
        self.cdp.on("ServiceWorker.workerVersionUpdated", self._update)
        self.cdp.send("ServiceWorker.enable")

    def _update(self, event):
        for v in event["versions"]:
            self.trace = (self.trace + [v["runningStatus"]])[-20:]
            if v["runningStatus"] == "stopped":
                self.stops += 1

    def stop(self, timeout_s: float = 15) -> None:
        # The open page holds the data key only once the worker has sent it (after the page's
        # "hello"): stopped before that, the worker would find no page to hand the key back
        # and the device would be locked. A person's page has long had it when the browser
        # stops an idle worker; so wait for it here (untimed).
        self.page.wait_for_function(KEY_HELD, timeout=15_000)
        seen = self.stops
        deadline = time.monotonic() + timeout_s
        while True:
            self.cdp.send("ServiceWorker.stopAllWorkers")
            again = time.monotonic() + 3
            while self.stops == seen and time.monotonic() < again:
                self.page.wait_for_timeout(5)
            if self.stops > seen:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service worker did not stop: {self.trace}")


def chart_series(dev, workers, url: str, n: int, cold: bool) -> dict:
    page = dev.page
    out = {"response": [], "dcl": [], "load": [], "not_worker": 0, "phases": []}
    for _ in range(n):
        if cold:
            workers.stop()
        resp = page.goto(url, wait_until="load")
        out["phases"].append(phases_of(resp.headers.get("server-timing") if resp else None))
        if (resp is None or resp.headers.get("x-rendered-by") != "service-worker" or page.url != url
                or resp.request.redirected_from is not None):
            out["not_worker"] += 1  # not the chart from the device (the network, or the unlock page)
        t = page.evaluate(NAV_TIMING)
        out["response"].append(t["response_end"])
        out["dcl"].append(t["dcl"])
        out["load"].append(t["load"])
    return out


def search_series(dev, workers, base: str, queries: list[str], cold: bool) -> dict:
    page = dev.page
    resp = page.goto(base + "/patients", wait_until="load")
    out = {"ms": [], "not_worker": 0, "empty": 0, "phases": []}
    if page.url != base + "/patients" or resp is None or resp.headers.get("x-rendered-by") != "service-worker":
        out["sample"] = f"the search page was not the device's: {page.url}"
    for q in queries:
        if cold:
            workers.stop()
        r = page.evaluate(SEARCH, q)
        if r["by"] != "service-worker" or r["status"] != 200:
            out["not_worker"] += 1
        if not r["results"]:
            out["empty"] += 1
        if r["sample"] and "sample" not in out:
            out["sample"] = r["sample"]
        out["ms"].append(r["ms"])
        out["phases"].append(phases_of(r["timing"]))
    return out


def phases_of(header: str | None) -> dict[str, float]:
    """The worker's own phases of one answer, from its Server-Timing header (static/sw/timing.js)."""
    out = {}
    for part in (header or "").split(","):
        name, _, dur = part.strip().partition(";dur=")
        if name and dur:
            out[name] = float(dur)
    return out


def phase_summary(phases: list[dict[str, float]]) -> dict[str, dict]:
    """p50 and p95 of each phase over a series."""
    names = sorted({k for p in phases for k in p})
    return {k: summary([p[k] for p in phases if k in p]) for k in names}


def phase_text(summaries: dict[str, dict]) -> str:
    return ", ".join(f"{k} {v['p50']:.1f}/{v['p95']:.1f}" for k, v in summaries.items())


def summary(values: list[float]) -> dict:
    return {"p50": pct(values, 50), "p95": pct(values, 95), "n": len(values)}


# ---- report ------------------------------------------------------------------------------

def render(args, manifest, reps: list[dict], setup: dict, vers: dict, profiled=None) -> str:
    n_changes = manifest["changes"]
    lines = [f"Offline reads on a device holding {args.patients:,} patients ({n_changes:,} records; its first "
             f"sync took {setup['seconds']:.0f} s). Chart: a patient with {args.chart_obs} observations over "
             f"{manifest['spec']['chart_visits']} visits, {args.opens} opens per series; search: {args.queries} "
             f"seeded queries per series for the app, the first {min(args.side_queries, args.queries)} of them for "
             f"the peer and the ceilings. Per series p50 and p95 in ms; the table gives the median over "
             f"{len(reps)} repetitions and the min–max of those per-repetition values.", ""]
    lines.append("| read | who | what is timed | p50 ms | min–max | p95 ms | min–max | ok |")
    lines.append("|---|---|---|---:|---:|---:|---:|---|")
    present = {k for r in reps for k in r if k != "rep"}
    keys = [k for k in LABELS if k in present] + sorted(present - set(LABELS))
    for key in keys:
        series = [r[key] for r in reps if key in r]
        p50 = [s["p50"] for s in series]
        p95 = [s["p95"] for s in series]
        bad = sum(s.get("bad", 0) for s in series)
        read, who, what = LABELS.get(key, (key, "", ""))
        lines.append(f"| {read} | {who} | {what} | **{fmt(med(p50))}** | {spread(p50)} | **{fmt(med(p95))}** | "
                     f"{spread(p95)} | {'yes' if not bad else f'NO ({bad})'} |")
    lines.append("")
    goal = []
    for key, what in (("chart_warm_app_response", "chart, worker's answer"), ("chart_warm_app_dcl", "chart, page parsed"),
                      ("search_warm_app", "search")):
        p95 = med([r[key]["p95"] for r in reps if key in r])
        if p95 is not None:
            goal.append(f"{what} p95 {fmt(p95)} ms — **{'met' if p95 < 50 else 'missed'}**")
    lines.append("Goal (p95 under 50 ms warm): " + "; ".join(goal) + ".")
    lines.append("")
    phased = [(k, LABELS[k][0]) for k in ("chart_warm_app_response", "chart_cold_app_response", "search_warm_app",
                                         "search_cold_app") if any("phases" in r.get(k, {}) for r in reps)]
    if phased:
        lines.append("The worker's own phases (its Server-Timing header; median over the repetitions of each "
                     "series' p50 / p95, ms): `session` = idle lock, store and session checks; `records` / "
                     "`patients` = rows read, decrypted, outbox replayed; `read` = the audit read noted; "
                     "`render` = the template; `total` = the worker's whole answer.")
        lines.append("")
        lines.append("| series | " + " | ".join(PHASES) + " |")
        lines.append("|---|" + "---:|" * len(PHASES))
        for key, label in phased:
            cells = []
            for name in PHASES:
                got = [r[key]["phases"][name] for r in reps if name in r.get(key, {}).get("phases", {})]
                cells.append(f"{fmt(med([g['p50'] for g in got]))} / {fmt(med([g['p95'] for g in got]))}" if got else "–")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    if profiled:
        for name, p in profiled.items():
            lines.append(f"Service worker's JavaScript thread over one more warm series ({name}; "
                         f"{p['seconds']:.2f} s sampled, self time; `(idle)` = waiting):")
            lines.append("")
            lines.append("| function (file:line) | s | share |")
            lines.append("|---|---:|---:|")
            for fn, secs, share in p["functions"]:
                lines.append(f"| `{fn}` | {secs:.2f} | {share:.0%} |")
            lines.append("")
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in vers.items()))
    return "\n".join(lines)


PHASES = ("session", "records", "patients", "read", "render", "total")

LABELS = {
    "chart_warm_app_response": ("chart, warm", "app", "navigation start → worker's HTML received (responseEnd)"),
    "chart_warm_app_dcl": ("chart, warm", "app", "navigation start → DOMContentLoaded end (page parsed, scripts run)"),
    "chart_warm_peer": ("chart, warm", "peer", "PouchDB get + allDocs of the patient's key range"),
    "chart_warm_ceiling_encrypted": ("chart, warm", "ceiling", "IndexedDB getAll by patient_id + AES-GCM decrypt"),
    "chart_warm_ceiling_plain": ("chart, warm", "ceiling", "IndexedDB getAll by patient_id (no encryption)"),
    "chart_cold_app_response": ("chart, worker restarted", "app", "navigation start → worker's HTML received"),
    "chart_cold_app_dcl": ("chart, worker restarted", "app", "navigation start → DOMContentLoaded end"),
    "chart_cold_peer": ("chart, reopened", "peer", "new PouchDB instance, then as warm"),
    "chart_cold_ceiling_encrypted": ("chart, reopened", "ceiling", "IndexedDB reopened, then as warm"),
    "chart_cold_ceiling_plain": ("chart, reopened", "ceiling", "IndexedDB reopened, then as warm (no encryption)"),
    "search_warm_app": ("search, warm", "app", "htmx request → results fragment received (fetch in the page)"),
    "search_warm_peer": ("search, warm", "peer", "PouchDB allDocs of all patients + the app's filter"),
    "search_warm_ceiling_encrypted": ("search, warm", "ceiling", "getAll patients by key range + decrypt + the app's filter"),
    "search_warm_ceiling_plain": ("search, warm", "ceiling", "getAll patients by key range + filter (no encryption)"),
    "search_cold_app": ("search, worker restarted", "app", "as warm, the worker stopped before each query"),
    "search_cold_peer": ("search, reopened", "peer", "new PouchDB instance, then as warm"),
    "search_cold_ceiling_encrypted": ("search, reopened", "ceiling", "IndexedDB reopened, then as warm"),
    "search_cold_ceiling_plain": ("search, reopened", "ceiling", "IndexedDB reopened, then as warm (no encryption)"),
}


def main():
    args = parse_args()
    work = Path(args.work)
    run = work / "offline_speed"
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    spec = Spec(patients=args.patients, observations=0, visits=1, visit_every=4,
                chart_obs=args.chart_obs, chart_visits=20)
    manifest = prepare(work / "cache", spec, run / "db", log)
    log(f"clinic {spec.key()}: {manifest['changes']:,} records for a device of {manifest['nurse']}")
    changes = json.loads(Path(manifest["changes_file"]).read_text())
    user = next(u for u in manifest["users"] if u["username"] == manifest["nurse"])
    queries = make_queries(changes, args.queries)
    chart_id = manifest["chart_patient_id"]

    from playwright.sync_api import sync_playwright
    server = peer = None
    reps, setup, profiled = [], {}, None
    try:
        server = Gunicorn(tuple(manifest["urls"]), args.app_port, run / "gunicorn.log", args.workers, args.threads)
        base = f"http://127.0.0.1:{args.app_port}"
        want_peer_page = not (args.no_peer and args.no_ceiling)
        if want_peer_page:
            from _peer_browser import PeerClinic
            peer = PeerClinic(Path(manifest["cache_dir"]) / "peer", args.peer_port, changes, log)
        pages_text = json.dumps([json.dumps(changes[i:i + PAGE], separators=(",", ":"))
                                 for i in range(0, len(changes), PAGE)])
        del changes
        with sync_playwright() as pw:
            # The app's device: signed in, first sync done, then offline (and the server gone).
            dev = Device(pw, run / "profiles" / "app")
            dev.context.add_init_script(script=KEY_WATCH)
            code = totp_code(user)
            t0 = time.perf_counter()
            sign_in(dev.page, base, user, code)
            until_ready(dev.page, user)
            setup = {"seconds": time.perf_counter() - t0, "store": store_counts(dev.page)}
            log(f"app device ready in {setup['seconds']:.1f} s; it holds {setup['store']['rows']:,} rows")
            chart_url = f"{base}/patients/{chart_id}"
            workers = Workers(dev.context, dev.page)
            dev.context.set_offline(True)
            server.stop()
            server = None
            # One open of each page first: the templates are compiled once per worker start.
            chart_series(dev, workers, chart_url, 1, False)
            search_series(dev, workers, base, queries[:1], False)

            pdev = None
            if want_peer_page:
                pdev = Device(pw, run / "profiles" / "peer")
                pdev.page.goto(peer.page_url)
                pdev.page.wait_for_function("() => window.benchReady === true")
                pdev.page.add_script_tag(path=str(BENCH / "browser_ceilings.js"))
                pdev.page.wait_for_function("() => window.benchCeilingsReady === true")
                pdev.page.evaluate("(t) => window.benchSetPages(t)", pages_text)
                if not args.no_peer:
                    r = pdev.page.evaluate("([u, a]) => window.peerReplicate(u, a)", [peer.remote, args.adapter])
                    setup["peer"] = r
                    log(f"peer device replicated {r['doc_count']:,} docs in {r['ms'] / 1000:.1f} s")
                    peer.stop()
                    peer = None
                if not args.no_ceiling:
                    for variant in ("encrypted", "plain"):
                        pdev.page.evaluate("(v) => window.readCeilingOpen(v)", variant)
                pdev.context.set_offline(True)

            for rep in range(1, args.reps + 1):
                out = {"rep": rep}
                for cold in ([False] if args.no_cold else [False, True]):
                    tag = "cold" if cold else "warm"
                    c = chart_series(dev, workers, chart_url, args.opens, cold)
                    out[f"chart_{tag}_app_response"] = {**summary(c["response"]), "bad": c["not_worker"],
                                                        "phases": phase_summary(c["phases"])}
                    out[f"chart_{tag}_app_dcl"] = {**summary(c["dcl"]), "bad": c["not_worker"]}
                    s = search_series(dev, workers, base, queries, cold)
                    out[f"search_{tag}_app"] = {**summary(s["ms"]), "bad": s["not_worker"] + s["empty"],
                                                "phases": phase_summary(s["phases"]),
                                                **({"sample": s["sample"]} if "sample" in s else {})}
                    if "sample" in s:
                        log(f"rep {rep} app {tag} search: not answered by the worker: {s['sample'][:200]!r}")
                    log(f"rep {rep} app {tag}: chart p50/p95 {out[f'chart_{tag}_app_response']['p50']:.0f}/"
                        f"{out[f'chart_{tag}_app_response']['p95']:.0f} ms (DCL "
                        f"{out[f'chart_{tag}_app_dcl']['p95']:.0f}), search {out[f'search_{tag}_app']['p50']:.0f}/"
                        f"{out[f'search_{tag}_app']['p95']:.0f} ms")
                    log(f"rep {rep} app {tag}: worker phases p50/p95 ms, chart: "
                        f"{phase_text(out[f'chart_{tag}_app_response']['phases'])}; search: "
                        f"{phase_text(out[f'search_{tag}_app']['phases'])}")
                    if pdev is None:
                        continue
                    sides = ([] if args.no_peer else [("peer", "peerChart", "peerSearch", None)]) + \
                            ([] if args.no_ceiling else [("ceiling_encrypted", "chartCeiling", "searchCeiling", "encrypted"),
                                                         ("ceiling_plain", "chartCeiling", "searchCeiling", "plain")])
                    awake = KeepAwake(dev.page)
                    for who, chart_fn, search_fn, variant in sides:
                        pre = [variant] if variant else []
                        charts = [awake() or pdev.page.evaluate(f"(a) => window.{chart_fn}(...a)", pre + [chart_id, cold])
                                  for _ in range(args.opens)]
                        finds = [awake() or pdev.page.evaluate(f"(a) => window.{search_fn}(...a)", pre + [q, cold])
                                 for q in queries[:args.side_queries]]
                        out[f"chart_{tag}_{who}"] = {**summary([x["ms"] for x in charts]),
                                                     "bad": sum(1 for x in charts if x["rows"] < args.chart_obs)}
                        out[f"search_{tag}_{who}"] = {**summary([x["ms"] for x in finds]),
                                                      "bad": sum(1 for x in finds if not x["results"])}
                        log(f"rep {rep} {who} {tag}: chart {out[f'chart_{tag}_{who}']['p50']:.1f}/"
                            f"{out[f'chart_{tag}_{who}']['p95']:.1f} ms, search {out[f'search_{tag}_{who}']['p50']:.0f}/"
                            f"{out[f'search_{tag}_{who}']['p95']:.0f} ms")
                reps.append(out)

            if args.profile:
                profiled = {}
                prof = WorkerProfiler(dev.context, dev.page)
                dev.page.goto(chart_url)  # a running worker for the profiler to attach to
                prof.start(dev.page)
                chart_series(dev, workers, chart_url, args.opens, False)
                profiled["chart opens"] = summarize_profile(prof.stop(dev.page))
                prof.start(dev.page)
                search_series(dev, workers, base, queries, False)
                profiled["searches"] = summarize_profile(prof.stop(dev.page))
            if pdev is not None:
                pdev.close()
            dev.close()
    finally:
        if peer is not None:
            peer.stop()
        if server is not None:
            server.stop()
    vers = versions()
    table = render(args, manifest, reps, setup, vers, profiled)
    print(table)
    (run / "results.md").write_text(table + "\n")
    (run / "results.json").write_text(json.dumps({
        "args": vars(args), "manifest": {k: v for k, v in manifest.items() if k != "users"},
        "setup": setup, "reps": reps, "profiled": profiled, "queries": queries, "versions": vers,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}, indent=1, default=str))
    log(f"results in {run / 'results.md'} and results.json")


if __name__ == "__main__":
    main()
