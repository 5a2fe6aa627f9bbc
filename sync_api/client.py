"""A Python client of sync protocol v1: an ordered outbox, push, pull into a local copy.

Used by the tests, and by scripts or a clinic hub. It keeps what the browser keeps
(DESIGN.md §4) in memory, and can save it to a JSON file between runs:

    client = SyncClient(HttpTransport("https://clinic.example", token="crt_..."))
    client.queue("observation.record", "observation", new_id(), {...})
    client.sync()        # push everything queued, then pull every change
"""
from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

PROTOCOL = 1


@dataclass
class Reply:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)


class Transport(Protocol):
    def __call__(self, method: str, path: str, body: dict | None) -> Reply: ...


class SyncFailed(Exception):
    """The exchange did not complete; everything queued is kept."""


class Unreachable(SyncFailed):
    """No answer (network down, server restarting) or a 5xx: retry later."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class SignInNeeded(SyncFailed):
    """401: the session or token is no longer valid. The queue waits for a new sign-in."""


class RequestRefused(SyncFailed):
    """400, 403 or 413: the server will never accept this request as it is."""

    def __init__(self, reply: Reply):
        super().__init__(f"{reply.status}: {reply.body.get('message', reply.body)}")
        self.reply = reply


class HttpTransport:
    """JSON over HTTP(S) with a bearer token, using only the standard library."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0,
                 headers: dict | None = None):
        # urlopen would also read file: and other schemes; a server is only ever HTTP(S).
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"the server address must start with http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers = {"Content-Type": "application/json", "Accept": "application/json",
                        **(headers or {})}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"

    def __call__(self, method: str, path: str, body: dict | None) -> Reply:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers=self.headers)
        try:
            with urllib.request.urlopen(  # nosec B310: only http(s) URLs, checked in __init__
                    request, timeout=self.timeout) as response:
                return Reply(response.status, _json(response.read()), dict(response.headers))
        except urllib.error.HTTPError as error:
            return Reply(error.code, _json(error.read()), dict(error.headers))
        except (urllib.error.URLError, OSError) as error:
            raise Unreachable(f"no answer from {self.base_url}: {error}") from error


def _json(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {"error": "not_json", "message": raw[:200].decode(errors="replace")}
    return body if isinstance(body, dict) else {"error": "not_an_object"}


@dataclass
class Store:
    """The device's copy: confirmed rows, the outbox, quarantine and sync positions."""

    client_id: str
    rows: dict[tuple[str, str], dict] = field(default_factory=dict)  # (entity, id) -> record
    outbox: list[dict] = field(default_factory=list)  # sealed mutations, in seq order
    sent: list[dict] = field(default_factory=list)    # acknowledged, kept for a re-push
    quarantine: list[dict] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)  # mid -> the server's answer
    next_seq: int = 1
    acked_seq: int = 0
    cursor: str | None = None

    def save(self, path: Path) -> None:
        state = {**self.__dict__, "rows": [[k[0], k[1], v] for k, v in self.rows.items()]}
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Store:
        state = json.loads(Path(path).read_text())
        state["rows"] = {(e, i): v for e, i, v in state["rows"]}
        return cls(**state)


class SyncClient:
    def __init__(self, transport: Transport, store: Store | None = None,
                 client_id: str | None = None, sent_kept: int = 10_000,
                 telemetry: Callable[[], dict] | None = None):
        self.transport = transport
        self.store = store or Store(client_id=client_id or "py-" + secrets.token_hex(8))
        self.sent_kept = sent_kept
        self.telemetry = telemetry

    @property
    def client_id(self) -> str:
        return self.store.client_id

    # Writing -------------------------------------------------------------------------------
    def queue(self, type_name: str, entity: str, entity_id: str, data: dict, *,
              base_version: int | None = None, base: dict | None = None,
              deps: list[str] | None = None, mid: str | None = None) -> str:
        """Seal a mutation into the outbox with the next seq; returns its mid."""
        mutation = {"mid": mid or str(uuid.uuid4()), "seq": self.store.next_seq,
                    "type": type_name, "entity": entity, "entity_id": entity_id, "data": data}
        if base_version is not None:
            mutation["base_version"] = base_version
        if base is not None:
            mutation["base"] = base
        if deps:
            mutation["deps"] = deps
        self.store.next_seq += 1
        self.store.outbox.append(mutation)
        return mutation["mid"]

    def push(self, batch_size: int = 100) -> list[dict]:
        """Send the outbox in order until it is empty; returns the answers received."""
        answers: list[dict] = []
        while self.store.outbox:
            batch = self.store.outbox[:batch_size]
            reply = self._call("/sync/v1/push", {"protocol": PROTOCOL, "client_id": self.client_id,
                                                 "mutations": batch, **self._telemetry()})
            if reply.status not in (200, 409):
                self._raise_for(reply)
            answers += self._settle(reply.body.get("results", []))
            if reply.status == 409:
                self._renumber_from(reply.body["expected_seq"])
        return answers

    def _settle(self, results: list[dict]) -> list[dict]:
        by_mid = {m["mid"]: m for m in self.store.outbox}
        for result in results:
            mutation = by_mid.get(result["mid"])
            if mutation is None or result.get("seq") != mutation["seq"]:
                continue  # an answer to an earlier numbering of this mutation
            self.store.outbox.remove(mutation)
            self.store.results[result["mid"]] = result
            self.store.acked_seq = max(self.store.acked_seq, mutation["seq"])
            if result["status"] == "rejected":
                self.store.quarantine.append({"mutation": mutation, "error": result.get("error")})
            else:
                self.store.sent.append(mutation)
                if result.get("record") is not None and result.get("version") is not None:
                    self._put(result["entity"], result["entity_id"], result["version"],
                              result["record"])
        del self.store.sent[:-self.sent_kept]
        return results

    def _renumber_from(self, expected: int) -> None:
        """The server expects an earlier seq than the outbox holds: it was restored from a
        backup and lost mutations this device had sent. Send them again (known ones come
        back as duplicates), then the queue, numbered on from where the server stands."""
        head = self.store.outbox[0]["seq"] if self.store.outbox else self.store.next_seq
        if expected >= head:
            return
        resend = [m for m in self.store.sent if m["seq"] >= expected]
        self.store.sent = [m for m in self.store.sent if m["seq"] < expected]
        queue = resend + self.store.outbox
        for offset, mutation in enumerate(queue):
            mutation["seq"] = expected + offset
        self.store.outbox = queue
        self.store.next_seq = expected + len(queue)
        self.store.acked_seq = expected - 1

    # Reading -------------------------------------------------------------------------------
    def pull(self, limit: int = 1000) -> int:
        """Fetch changes until the server has no more; returns how many were applied."""
        applied = 0
        while True:
            reply = self._call("/sync/v1/pull", {"protocol": PROTOCOL, "client_id": self.client_id,
                                                 "cursor": self.store.cursor, "limit": limit,
                                                 **self._telemetry()})
            if reply.status != 200:
                self._raise_for(reply)
            body = reply.body
            if body["reset"]:
                self.store.rows.clear()
                if body["last_seq"] < self.store.acked_seq:
                    self._renumber_from(body["last_seq"] + 1)
            for change in body["changes"]:
                if change["op"] == "evict":
                    self._evict(change["entity"], change["id"])
                else:
                    applied += self._put(change["entity"], change["id"], change["version"],
                                         change["record"])
            self.store.cursor = body["cursor"]
            if not body["has_more"]:
                return applied

    def sync(self) -> None:
        self.push()
        self.pull()

    def heartbeat(self) -> dict:
        reply = self._call("/sync/v1/heartbeat", {"protocol": PROTOCOL,
                                                  "client_id": self.client_id,
                                                  **self._telemetry()})
        if reply.status != 200:
            self._raise_for(reply)
        return reply.body

    def record(self, entity: str, entity_id: str) -> dict | None:
        return self.store.rows.get((entity, entity_id))

    def _put(self, entity: str, entity_id: str, version: int, record: dict) -> int:
        held = self.store.rows.get((entity, entity_id))
        if held is not None and held.get("version", 0) >= version:
            return 0  # an older or equal version arriving late never replaces a newer one
        self.store.rows[(entity, entity_id)] = record
        return 1

    def _evict(self, entity: str, entity_id: str) -> None:
        self.store.rows.pop((entity, entity_id), None)
        if entity == "patient":
            for key in [k for k, v in self.store.rows.items() if v.get("patient_id") == entity_id]:
                del self.store.rows[key]

    # Transport -----------------------------------------------------------------------------
    def _telemetry(self) -> dict:
        if self.telemetry is None:
            return {}
        return {"telemetry": self.telemetry()}

    def _call(self, path: str, body: dict) -> Reply:
        return self.transport("POST", path, body)

    @staticmethod
    def _raise_for(reply: Reply) -> None:
        if reply.status == 401:
            raise SignInNeeded(reply.body.get("message", "Sign in again."))
        if reply.status >= 500:
            retry = reply.headers.get("Retry-After")
            raise Unreachable(f"{reply.status}: {reply.body.get('message', '')}",
                              float(retry) if retry else None)
        raise RequestRefused(reply)
