"""Browser tests: Playwright (sync API) driving Debian's Chromium against a real
gunicorn server with its own SQLite databases and demo data.

Independent of tests/conftest.py on purpose, so e2e/ can be run on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from e2e.chromium import CHROMIUM, CHROMIUM_ARGS
from tests import gunicorn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ARTIFACTS = HERE / "artifacts"
STARTUP_TIMEOUT_S = 30


def pytest_collection_modifyitems(config, items):
    # This hook sees every collected item, not only those under e2e/.
    for item in items:
        if Path(item.path).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    # new_context's teardown reads these to decide whether to keep screenshots.
    setattr(item, f"_e2e_report_{report.when}", report)
    return report


def _flask(env: dict, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"flask {' '.join(args)} exited {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}",
            pytrace=False,
        )
    return proc.stdout


def _parse_users(stdout: str) -> list[dict]:
    try:
        return json.loads(stdout)
    except json.JSONDecodeError:
        # Tolerate log lines printed before the JSON array.
        start = stdout.find("[")
        if start < 0:
            raise
        return json.loads(stdout[start:])


class LiveServer:
    """A gunicorn process serving the app on 127.0.0.1:port."""

    def __init__(self, tmp: Path, env: dict, users: list[dict]):
        self.tmp = tmp
        self.env = env
        self.users = users
        self.port = gunicorn.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self._logs: list = []
        self._starts = 0

    # -- users -----------------------------------------------------------------
    def clinics(self) -> list:
        """Clinic ids in the order they first appear in the seed output."""
        seen: list = []
        for u in self.users:
            if u.get("clinic_id") not in seen:
                seen.append(u.get("clinic_id"))
        return seen

    def user(self, role: str, clinic_index: int = 0) -> dict:
        clinics = self.clinics()
        if clinic_index >= len(clinics):
            raise LookupError(f"no clinic #{clinic_index} in the demo data (clinics: {clinics})")
        clinic_id = clinics[clinic_index]
        for u in self.users:
            if u.get("role") == role and u.get("clinic_id") == clinic_id:
                return u
        raise LookupError(f"no demo user with role {role!r} in clinic #{clinic_index} ({clinic_id!r})")

    # -- process ---------------------------------------------------------------
    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            return
        self._starts += 1
        out = open(self.tmp / f"gunicorn-{self._starts}.out", "w")
        err = open(self.tmp / f"gunicorn-{self._starts}.err", "w")
        self._logs += [out, err]
        self.stderr_path = Path(err.name)
        self.proc = gunicorn.spawn(self.env, self.port, out, err, "-w", "2", "--threads", "12")
        self._wait_ready()

    def _wait_ready(self) -> None:
        last_error = gunicorn.wait_until_serving(self.proc, self.port, STARTUP_TIMEOUT_S)
        if last_error is None:
            return
        self.stop()
        for f in self._logs:
            f.flush()
        stderr = self.stderr_path.read_text(errors="replace").splitlines()[-200:]
        pytest.fail(
            f"server at {self.url} not ready within {STARTUP_TIMEOUT_S} s ({last_error})\n"
            f"--- gunicorn stderr (last 200 lines) ---\n" + "\n".join(stderr),
            pytrace=False,
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server; afterwards connections to .url are refused."""
        proc, self.proc = self.proc, None
        if proc is not None:
            gunicorn.stop(proc, sig)

    def restart(self) -> None:
        """Kill the server outright (as a crash would) and start it again on the same port."""
        self.stop(signal.SIGKILL)
        self.start()

    @contextlib.contextmanager
    def restarted_with(self, **overrides: str):
        """The server restarted with these environment variables; restarted as it was after."""
        saved = {name: self.env.get(name) for name in overrides}
        self.env.update(overrides)
        self.restart()
        try:
            yield self
        finally:
            for name, value in saved.items():
                if value is None:
                    self.env.pop(name, None)
                else:
                    self.env[name] = value
            self.restart()

    def close(self) -> None:
        self.stop()
        for f in self._logs:
            f.close()
        self._logs.clear()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live_server")
    env = os.environ.copy()
    env.update(
        APP_ENV="development",
        SECRET_KEY=secrets.token_hex(32),
        DATABASE_URL=f"sqlite:///{tmp}/clinic.db",
        AUDIT_DATABASE_URL=f"sqlite:///{tmp}/audit.db",
        PYTHONUNBUFFERED="1",
        # Every open page holds a live-update stream, and a page that navigated away frees its
        # thread only when the next keepalive fails to send: tests navigate far more often
        # than people do, so keepalives are frequent here and threads plentiful.
        SYNC_EVENTS_KEEPALIVE_SECONDS="3",
    )
    _flask(env, "db", "upgrade")
    users = _parse_users(_flask(env, "demo", "seed", "--patients", "30", "--json"))
    server = LiveServer(tmp, env, users)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def browser():
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    finally:
        pw.stop()


@pytest.fixture
def new_context(browser, request):
    """Factory for fresh browser contexts (1280x800); all are closed after the test.

    When the test fails, a screenshot of every page still open goes to e2e/artifacts/.
    """
    contexts = []

    def make(**kwargs):
        kwargs.setdefault("viewport", {"width": 1280, "height": 800})
        context = browser.new_context(**kwargs)
        contexts.append(context)
        return context

    yield make

    failed = any(
        getattr(getattr(request.node, f"_e2e_report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
        for i, context in enumerate(contexts):
            for j, page in enumerate(context.pages):
                try:
                    page.screenshot(path=str(ARTIFACTS / f"{name}-{i}-{j}.png"), full_page=True)
                except Exception as e:  # a crashed page must not hide the real failure
                    print(f"screenshot of context {i} page {j} failed: {e!r}", file=sys.stderr)
    for context in contexts:
        context.close()
