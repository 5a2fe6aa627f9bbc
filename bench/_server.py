"""The app as production runs it: the Procfile's gunicorn line, on 127.0.0.1, and a client
that drains a device's outbox through POST /sync/v1/push, one request in flight."""
from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections import Counter
from pathlib import Path

from _backends import app_env
from _memory import children, cpu_seconds
from _paths import ROOT, stop_process


def procfile_web() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            # Loopback only: a benchmark listens on nothing else.
            return line[4:].strip().replace("0.0.0.0", "127.0.0.1")
    raise RuntimeError("no web: line in Procfile")


class Gunicorn:
    def __init__(self, urls: tuple[str, str], port: int, log: Path, workers: int, threads: int):
        env = {**app_env(*urls), "PORT": str(port), "WEB_CONCURRENCY": str(workers),
               "GUNICORN_THREADS": str(threads)}
        self.port = port
        self.command = procfile_web()
        self.log = open(log, "ab")
        self._log_from = self.log.tell()
        self.proc = subprocess.Popen(["bash", "-c", "exec " + self.command], cwd=ROOT, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready()
        self._wait_for_workers(workers)
        self.workers = self._children()

    def _wait_ready(self):
        for _ in range(150):  # at most ~30 s
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited ({self.proc.returncode}); see {self.log.name}")
            try:
                con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                con.request("GET", "/sync/v1/openapi.json")
                if con.getresponse().status == 200:
                    con.close()
                    return
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn did not answer on 127.0.0.1:{self.port}")

    def _wait_for_workers(self, workers: int) -> None:
        """Until every worker has loaded the app: the first answer comes from whichever was
        first, and a burst sent while another still loads lands on the first alone."""
        path = Path(self.log.name)
        for _ in range(150):
            with path.open("rb") as log:
                log.seek(self._log_from)
                if log.read().count(b"Worker ready to serve") >= workers:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"not every gunicorn worker started; see {self.log.name}")

    def _children(self) -> list[int]:
        return children(self.proc.pid)

    def cpu_seconds(self) -> float:
        """User+system CPU of the master and its workers so far (Linux /proc)."""
        return cpu_seconds([self.proc.pid, *self.workers])

    def stop(self):
        stop_process(self.proc, self.log)


class Pusher:
    """A device draining its outbox: sequential requests on one keep-alive connection."""

    def __init__(self, port: int, token: str):
        self.port = port
        self.headers = {"Content-Type": "application/json", "Accept": "application/json",
                        "Authorization": f"Bearer {token}"}
        self.con = None

    def post(self, body: bytes, path: str = "/sync/v1/push") -> tuple[int, bytes]:
        """One request on the device's connection (a pull too), sent again once if the server
        had closed it."""
        for attempt in range(2):
            if self.con is None:
                self.con = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
            try:
                self.con.request("POST", path, body, self.headers)
                resp = self.con.getresponse()
                data = resp.read()
                if resp.getheader("Connection", "").lower() == "close":
                    self.con.close()
                    self.con = None
                return resp.status, data
            except (http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine):
                # An idle keep-alive connection the server closed: resend (a push is idempotent).
                self.con.close()
                self.con = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def run(self, bodies: list[bytes]) -> dict:
        statuses = Counter()
        http_codes = Counter()
        t0 = time.perf_counter()
        for body in bodies:
            code, data = self.post(body)
            http_codes[code] += 1
            if code == 200:
                for r in json.loads(data)["results"]:
                    statuses[r["status"]] += 1
            else:
                statuses[f"http {code}: {data[:200]!r}"] += 1
        seconds = time.perf_counter() - t0
        return {"seconds": seconds, "statuses": dict(statuses), "http": dict(http_codes),
                "requests": len(bodies)}

    def close(self):
        if self.con is not None:
            self.con.close()
            self.con = None
