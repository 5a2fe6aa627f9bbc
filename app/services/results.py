"""Mutations as they arrive and the results they get (the wire shapes of DESIGN.md §5)."""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field

from app.domain.ids import is_uuid

APPLIED = "applied"
DUPLICATE = "duplicate"
CONFLICT = "conflict"
REJECTED = "rejected"


@dataclass
class Mutation:
    mid: str
    type: str
    entity: str
    entity_id: str
    data: dict
    base_version: int | None = None
    base: dict | None = None
    deps: list[str] = field(default_factory=list)
    client_id: str | None = None
    seq: int | None = None
    client_ts: str | None = None

    @classmethod
    def from_wire(cls, body: dict, client_id: str | None = None) -> Mutation:
        return cls(mid=body["mid"], type=body["type"], entity=body["entity"],
                   entity_id=body["entity_id"], data=body.get("data") or {},
                   base_version=body.get("base_version"), base=body.get("base"),
                   deps=list(body.get("deps") or []), client_id=client_id, seq=body.get("seq"),
                   client_ts=body.get("client_ts"))

    def payload_hash(self, key: bytes | None = None) -> str:
        """What makes two deliveries 'the same mutation': everything but transport fields.

        Keyed (HMAC) when a key is given: a plain hash of a registration would let anyone
        holding the database confirm a guessed national id, since every other field of it
        is stored in the clear."""
        payload = {"type": self.type, "entity": self.entity, "entity_id": self.entity_id,
                   "base_version": self.base_version, "base": self.base, "data": self.data,
                   "deps": self.deps}
        canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if key is None:
            return hashlib.sha256(canonical.encode()).hexdigest()
        return hmac.new(key, canonical.encode(), hashlib.sha256).hexdigest()


@dataclass
class Result:
    mid: str
    status: str
    entity: str
    entity_id: str
    version: int | None = None
    record: dict | None = None
    conflict: dict | None = None
    error: dict | None = None
    seq: int | None = None

    @property
    def ok(self) -> bool:
        return self.status in (APPLIED, DUPLICATE)

    def to_wire(self) -> dict:
        body = {"mid": self.mid, "status": self.status, "entity": self.entity,
                "entity_id": self.entity_id}
        if self.seq is not None:
            body["seq"] = self.seq
        for name in ("version", "record", "conflict", "error"):
            value = getattr(self, name)
            if value is not None:
                body[name] = value
        return body

    @classmethod
    def from_stored(cls, stored: dict, status: str) -> Result:
        return cls(mid=stored["mid"], status=status, entity=stored["entity"],
                   entity_id=stored["entity_id"], version=stored.get("version"),
                   record=stored.get("record"), conflict=stored.get("conflict"),
                   error=stored.get("error"), seq=stored.get("seq"))


class Rejection(Exception):
    """A mutation that can never apply as sent: bad input, no permission, a broken rule."""

    def __init__(self, code: str, message: str, problems: list[dict] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.problems = problems or []

    def as_error(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.problems:
            error["problems"] = self.problems
        return error


def patient_of(mutation: Mutation, result: Result) -> str | None:
    """The patient a mutation concerns, for the audit log."""
    if mutation.entity == "patient":
        return mutation.entity_id
    record = result.record or {}
    named = record.get("patient_id") or mutation.data.get("patient_id")
    # A refused mutation's data was never checked: only an id-shaped value names a patient.
    return named if is_uuid(named) else None
