"""The peer for the browser benchmarks: pouchdb-server holding the very records a device of
the clinic pulls from the app, as CouchDB documents, seeded with the shared
peers/pouch_seed.js (unchanged), which also serves the peer's page (peers/browser/bench.html
with PouchDB's browser build) from the same origin. The seeded pouchdb-server directory is
kept in the clinic's cache folder, so later runs skip the seeding.

Document ids: `patient/<id>` for patients and `rec/<patient id>/<entity>/<id>` for the rest,
so one patient's documents are one key range (what a PouchDB app would do for a chart).
Each document is {type: entity, version, record}, the record exactly as the app sends it.
"""
from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from pathlib import Path

from _paths import PEERS
from _peer import NODE_DIR, PouchServer, ensure_node_packages

SEED_DB = "clinic_seed"


def peer_docs(changes: list[dict]) -> list[dict]:
    rows = []
    for c in changes:
        if c.get("op", "put") != "put":
            continue
        record = c["record"]
        if c["entity"] == "patient":
            doc_id = f"patient/{c['id']}"
        else:
            doc_id = f"rec/{record.get('patient_id') or '-'}/{c['entity']}/{c['id']}"
        rows.append({"id": doc_id, "type": c["entity"], "version": c.get("version"), "record": record})
    return rows


def _get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.loads(resp.read())
    except OSError:
        return None


class PeerClinic:
    def __init__(self, home: Path, port: int, changes: list[dict], log):
        ensure_node_packages(log)
        self.home = home
        self.server = PouchServer(home, port)
        self.url = self.server.url
        self.page_url = f"{self.url}/peerapp/_design/peer/bench.html"
        self.remote = f"{self.url}/{SEED_DB}"
        docs = peer_docs(changes)
        self.n = len(docs)
        marker = home / "seeded.json"
        info = _get(self.remote)
        page = _get(f"{self.url}/peerapp/_design/peer")
        if (marker.exists() and json.loads(marker.read_text()).get("docs") == self.n
                and info and info.get("doc_count") == self.n and page):
            log(f"peer: pouchdb-server already holds the {self.n:,} documents ({home})")
            return
        data = home / "docs.json"
        data.write_text(json.dumps(docs, separators=(",", ":")))
        log(f"peer: seeding pouchdb-server with {self.n:,} documents (peers/pouch_seed.js; once)")
        out = subprocess.run(["node", str(PEERS / "pouch_seed.js"), "--server", self.url,
                              "--data", str(data), "--seed-db", SEED_DB],
                             env={**os.environ, "NODE_PATH": str(NODE_DIR / "node_modules"),
                                  "NODE_OPTIONS": "--max-old-space-size=4096"},
                             capture_output=True, text=True, timeout=3600)
        if out.returncode != 0:
            self.stop()
            raise RuntimeError(f"pouch_seed.js failed:\n{out.stderr[-2000:]}")
        data.unlink()
        marker.write_text(json.dumps({"docs": self.n}))

    @property
    def pid(self) -> int:
        return self.server.proc.pid

    def stop(self):
        self.server.stop()
