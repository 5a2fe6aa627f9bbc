"""Headless Chromium for the browser benchmarks: a fresh on-disk profile per device, the app's
sign-in (password, then a TOTP code, as e2e/helpers.py does it), bytes on the wire from
Playwright's request sizes, CPU of the browser's processes, and small statistics helpers.

Chromium is Debian's (/usr/bin/chromium); nothing is downloaded. Profiles are real
directories (launch_persistent_context), as a tablet's are: an incognito context would keep
IndexedDB in memory and flatter every write.
"""
from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path

from _memory import cpu_seconds, proc_stat
from _paths import use_repo

use_repo()
from e2e.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402 (the repository is on the path now)
# User+system CPU seconds of these processes so far.
proc_cpu = cpu_seconds


def tree(root_pids: set[int]) -> set[int]:
    """The processes and all their descendants (Linux /proc)."""
    parent = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = proc_stat(int(entry))
            if f:
                parent[int(entry)] = int(f[1])
    out = set(root_pids)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in out and pid not in out:
                out.add(pid)
                grew = True
    return out


class Device:
    """One tablet: a Chromium with a fresh profile directory, removed when closed."""

    def __init__(self, pw, profile: Path, viewport=(1280, 800)):
        shutil.rmtree(profile, ignore_errors=True)
        profile.mkdir(parents=True)
        self.profile = profile
        self.context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": viewport[0], "height": viewport[1]})
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.page.set_default_timeout(600_000)
        self.requests = []
        self.context.on("requestfinished", lambda req: self.requests.append(req))
        self.roots = {int(e) for e in os.listdir("/proc") if e.isdigit()
                      and str(profile) in _cmdline(int(e))}

    def cpu_seconds(self) -> float:
        return proc_cpu(tree(self.roots))

    def close(self):
        try:
            self.context.close()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def on_wire(requests, since: float = 0.0) -> dict:
    """Bytes that crossed the network for these requests (started after `since`, epoch ms):
    the service worker's own fetches, and the page's requests the worker did not answer.
    Page requests the worker answered (from its cache or IndexedDB) are not on the wire."""
    out = {"requests": 0, "down": 0, "up": 0}
    for req in requests:
        if req.timing["startTime"] < since:
            continue
        if req.service_worker is None:
            resp = req.response()
            if resp is not None and resp.from_service_worker:
                continue
        s = req.sizes()
        out["requests"] += 1
        out["down"] += s["responseBodySize"] + s["responseHeadersSize"]
        out["up"] += s["requestBodySize"] + s["requestHeadersSize"]
    return out


def sign_in(page, base: str, user: dict, code: str) -> None:
    """The sign-in form, then the code form (as e2e/helpers.py::sign_in); returns when the
    browser has left the sign-in pages."""
    page.goto(base + "/login")
    page.fill("input[name=username]", user["username"])
    page.fill("input[name=password]", user["password"])
    page.locator("input[name=username]").locator("xpath=ancestor::form[1]") \
        .locator("button[type=submit]").first.click()
    field = page.locator("input[name=code]")
    field.wait_for(state="visible")
    field.fill(code)
    field.locator("xpath=ancestor::form[1]").locator("button[type=submit]").first.click()
    page.wait_for_url(lambda url: "/login" not in url)


def totp_code(user: dict) -> str:
    """A code from a time step not used yet (waits for the next step when needed)."""
    use_repo()
    from e2e.helpers import fresh_totp
    return fresh_totp(user["totp_secret"])


READY = "() => document.documentElement.dataset.offlineReady === 'yes'"


def until_ready(page, user: dict, timeout_s: float = 900) -> bool:
    """Wait for the first sync to finish; if the device asks for the password to set itself
    up (the worker missed the sign-in's), give it. Returns whether it asked."""
    asked = False
    deadline = time.monotonic() + timeout_s
    while True:
        if "/device/unlock" in page.url and page.locator("#unlock-password").count():
            page.fill("#unlock-password", user["password"])
            page.click("#unlock button[type=submit]")
            page.wait_for_url(lambda url: "/device/unlock" not in url)
            asked = True
        try:
            page.wait_for_function(READY, timeout=2000, polling=20)
            return asked
        except Exception:  # noqa: BLE001  (Playwright's TimeoutError, or a navigation under way)
            if time.monotonic() > deadline:
                raise RuntimeError(f"the device did not get ready within {timeout_s} s ({page.url})")


def store_counts(page) -> dict | None:
    """What the device holds (rows, initial_sync), read without the key (e2e/helpers)."""
    use_repo()
    from e2e.offline import device_store
    held = device_store(page)
    if held and "patients" in held:
        held["patients"] = len(held["patients"])  # the count, not 20,000 ids in results.json
    return held


# ---- statistics ---------------------------------------------------------------------------

def pct(values, p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))
    return ordered[k]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def spread(values) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{fmt(min(values))}–{fmt(max(values))}"


def fmt(x, digits: int | None = None) -> str:
    if x is None:
        return "–"
    if digits is None:
        digits = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{digits}f}"


# ---- the service worker's CPU profile (CDP, through the page's session) ----------------------

class WorkerProfiler:
    """Samples the service worker's JavaScript thread with the V8 profiler. Playwright gives no
    CDP session for a worker, so the page's session auto-attaches to it (non-flat) and the
    profiler's commands go through Target.sendMessageToTarget."""

    def __init__(self, context, page, interval_us: int = 500):
        import json as _json
        self._json = _json
        self.cdp = context.new_cdp_session(page)
        self.interval = interval_us
        self.sessions: list[str] = []
        self.replies: dict[int, dict] = {}
        self.next_id = 900_000
        self.cdp.on("Target.attachedToTarget", lambda e: self.sessions.append(e["sessionId"])
                    if e["targetInfo"]["type"] == "service_worker" else None)
        self.cdp.on("Target.receivedMessageFromTarget", self._message)
        self.cdp.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": False,
                                               "flatten": False})

    def _message(self, event):
        msg = self._json.loads(event["message"])
        if "id" in msg:
            self.replies[msg["id"]] = msg

    def _send(self, sid: str, method: str, params: dict | None = None) -> int:
        self.next_id += 1
        self.cdp.send("Target.sendMessageToTarget", {"sessionId": sid, "message": self._json.dumps(
            {"id": self.next_id, "method": method, "params": params or {}})})
        return self.next_id

    def start(self, page, timeout_s: float = 20) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.sessions:
            if time.monotonic() > deadline:
                raise RuntimeError("no service worker to profile")
            page.wait_for_timeout(50)
        sid = self.sessions[-1]
        self._send(sid, "Profiler.enable")
        self._send(sid, "Profiler.setSamplingInterval", {"interval": self.interval})
        self._send(sid, "Profiler.start")

    def stop(self, page, timeout_s: float = 60) -> dict:
        ask = self._send(self.sessions[-1], "Profiler.stop")
        deadline = time.monotonic() + timeout_s
        while ask not in self.replies:
            if time.monotonic() > deadline:
                raise RuntimeError("the profile did not arrive")
            page.wait_for_timeout(100)
        return self.replies[ask]["result"]["profile"]


def summarize_profile(profile: dict, top: int = 18) -> dict:
    """Self time by function and by file; '(idle)' is the worker waiting (IndexedDB, network,
    WebCrypto, timers)."""
    nodes = {n["id"]: n for n in profile["nodes"]}
    self_us: dict[int, float] = {}
    for node_id, delta in zip(profile["samples"], profile["timeDeltas"]):
        self_us[node_id] = self_us.get(node_id, 0) + delta
    total = sum(self_us.values()) or 1
    by_fn: dict[str, float] = {}
    by_file: dict[str, float] = {}
    for node_id, us in self_us.items():
        frame = nodes[node_id]["callFrame"]
        url = frame.get("url") or ""
        short = url.rsplit("/static/", 1)[-1] if "/static/" in url else (url.rsplit("/", 1)[-1] or "")
        name = frame.get("functionName") or "(anonymous)"
        label = f"{name} ({short}:{frame.get('lineNumber', -1) + 1})" if short else name
        by_fn[label] = by_fn.get(label, 0) + us
        file_label = short or name
        by_file[file_label] = by_file.get(file_label, 0) + us
    ordered = lambda d: [(k, v / 1e6, v / total) for k, v in sorted(d.items(), key=lambda kv: -kv[1])]  # noqa: E731
    return {"seconds": total / 1e6, "functions": ordered(by_fn)[:top], "files": ordered(by_file)[:top]}
