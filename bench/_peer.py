"""The peer, measured in the same run: PouchDB (Node, LevelDB client) replicating to
pouchdb-server, with the shared scripts in peers/ (pouch_push.js for the observations at
PouchDB's default batch_size 100) and bench/pouch_batches.js (the same method for other
batch sizes and for edits of patient documents). Node packages go into /tmp/peer-node,
the same place and versions as peers/run_all.sh, so either reuses the other's install.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

from _paths import BENCH, PEERS, stop_process

NODE_DIR = Path("/tmp/peer-node")


# What the benchmarks here load (pouchdb-server, and PouchDB with its memory adapter in Node):
# peers/run_all.sh also lists playwright-core for its own browser scripts; the browsers here
# are driven from Python with Debian's Chromium, so no Playwright package is installed.
NEEDED = ("pouchdb-server", "pouchdb", "pouchdb-adapter-memory")


def _run_all_packages() -> str:
    """The npm packages (and versions) peers/run_all.sh installs that the benchmarks use."""
    m = re.search(r'^NPM_PKGS="([^"]+)"', (PEERS / "run_all.sh").read_text(), re.MULTILINE)
    if not m:
        raise RuntimeError("NPM_PKGS not found in peers/run_all.sh")
    return " ".join(p for p in m.group(1).split() if p.rsplit("@", 1)[0] in NEEDED)


def ensure_node_packages(log) -> None:
    pkgs = _run_all_packages()
    marker = NODE_DIR / ".installed"
    # peers/run_all.sh writes its whole list here: what it installed serves too.
    if marker.exists() and set(pkgs.split()) <= set(marker.read_text().split()):
        return
    NODE_DIR.mkdir(parents=True, exist_ok=True)
    if not (NODE_DIR / "package.json").exists():
        (NODE_DIR / "package.json").write_text('{"name":"peer-node","private":true}\n')
    log(f"installing the peer's npm packages into {NODE_DIR} (once): {pkgs}")
    out = subprocess.run(["npm", "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund",
                          "--loglevel=error", *pkgs.split()],
                         capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"npm install failed:\n{out.stderr[-2000:]}")
    marker.write_text(pkgs + "\n")


class PouchServer:
    def __init__(self, work: Path, port: int):
        self.dir = work / "pouch"
        (self.dir / "db").mkdir(parents=True, exist_ok=True)
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(work / "pouchdb-server.log", "ab")
        self.proc = subprocess.Popen(
            ["node", str(NODE_DIR / "node_modules/pouchdb-server/bin/pouchdb-server"),
             "--host", "127.0.0.1", "--port", str(port), "--dir", str(self.dir / "db"),
             "--config", str(self.dir / "config.json"), "--no-stdout-logs"],
            cwd=self.dir, stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(100):
            if self.proc.poll() is not None:
                raise RuntimeError("pouchdb-server exited; see pouchdb-server.log")
            try:
                urllib.request.urlopen(self.url + "/", timeout=2).read()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("pouchdb-server did not come up")

    def push(self, kind: str, batch: int, data: Path, workdir: Path) -> dict:
        """One timed replication (kind obs or patient); the JSON line the script printed."""
        env = {**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules")}
        if kind == "obs" and batch == 100:
            # PouchDB's defaults are batch_size 100: the shared script, unchanged.
            cmd = ["node", str(PEERS / "pouch_push.js"), "--server", self.url, "--data", str(data),
                   "--workdir", str(workdir), "--reps", "1", "--adapter", "leveldb",
                   "--server-pid", str(self.proc.pid)]
        else:
            cmd = ["node", str(BENCH / "pouch_batches.js"), "--server", self.url, "--data",
                   str(data), "--workdir", str(workdir), "--kind", "update" if kind == "patient" else kind, "--batch", str(batch),
                   "--reps", "1", "--server-pid", str(self.proc.pid)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        lines = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
        if out.returncode != 0 or not lines:
            raise RuntimeError(f"peer push failed ({' '.join(cmd[:2])}):\n{out.stderr[-1500:]}")
        return {**lines[-1], "script": Path(cmd[1]).name}

    def stop(self):
        stop_process(self.proc, self.log, grace_s=10)
