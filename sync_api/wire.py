"""The request bodies of /sync/v1, as JSON Schemas, and their checks with per-mutation problems."""
from __future__ import annotations

from flask import current_app, request

from app.domain.mutations import ENVELOPE_SCHEMA
from app.domain.validation import validate
from sync_api.errors import SyncError

PROTOCOL = 1

CLIENT_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$", "x-label": "Client id",
             "x-hint": "8 to 64 letters, digits, '-' or '_'"}

_COUNT = {"type": "integer", "minimum": 0, "maximum": 10**12}
_BYTES = {"type": ["integer", "null"], "minimum": 0, "maximum": 10**15}
TELEMETRY_FIELDS = {
    "queue_depth": {**_COUNT, "x-label": "Queue depth"},
    "oldest_pending_at": {"type": ["string", "null"], "format": "date-time", "maxLength": 40,
                          "x-label": "Oldest pending mutation"},
    "quarantine_count": {**_COUNT, "x-label": "Quarantine count"},
    "storage_used": {**_BYTES, "x-label": "Storage used"},
    "storage_quota": {**_BYTES, "x-label": "Storage quota"},
    "storage_persisted": {"type": ["boolean", "null"], "x-label": "Storage persisted"},
    "app_version": {"type": ["string", "null"], "maxLength": 60, "x-label": "App version"},
    "worker_version": {"type": ["string", "null"], "maxLength": 60, "x-label": "Worker version"},
}
TELEMETRY = {"type": "object", "properties": TELEMETRY_FIELDS, "additionalProperties": False,
             "x-label": "Telemetry"}

# A pushed mutation is the shared envelope plus the order it was made in.
PUSH_MUTATION = {**ENVELOPE_SCHEMA, "required": [*ENVELOPE_SCHEMA["required"], "seq"]}

PUSH_REQUEST = {
    "type": "object",
    "required": ["protocol", "client_id", "mutations"],
    "properties": {
        "protocol": {"const": PROTOCOL, "x-label": "Protocol"},
        "client_id": CLIENT_ID,
        "mutations": {"type": "array", "items": {"type": "object"}, "x-label": "Mutations"},
        "telemetry": TELEMETRY,
    },
    "additionalProperties": False,
}
PULL_REQUEST = {
    "type": "object",
    "required": ["protocol", "client_id"],
    "properties": {
        "protocol": {"const": PROTOCOL, "x-label": "Protocol"},
        "client_id": CLIENT_ID,
        "cursor": {"type": ["string", "null"], "maxLength": 2000, "x-label": "Cursor"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 5000, "x-label": "Limit"},
        "telemetry": TELEMETRY,
    },
    "additionalProperties": False,
}
HEARTBEAT_REQUEST = {
    "type": "object",
    "required": ["protocol", "client_id"],
    "properties": {
        "protocol": {"const": PROTOCOL, "x-label": "Protocol"},
        "client_id": CLIENT_ID,
        "telemetry": TELEMETRY,
    },
    "additionalProperties": False,
}


def json_body(schema: dict) -> dict:
    """The request's JSON object, or a 400 that lists every problem found."""
    if not request.is_json:
        raise SyncError(400, "invalid_request", "Send a JSON body with Content-Type "
                        "application/json. Nothing was applied.")
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise SyncError(400, "invalid_request", "The body is not a JSON object. Nothing was "
                        "applied.")
    problems = [_protocol_problem(p) for p in validate(schema, body)]
    if problems:
        raise SyncError(400, "invalid_request", _summary(problems), problems=problems)
    return body


def check_mutations(mutations: list) -> None:
    """Every pushed mutation's envelope; problems name the mutation by index and id."""
    limit = current_app.config["SYNC_MAX_BATCH"]
    if len(mutations) > limit:
        raise SyncError(413, "too_many_mutations", f"A push holds at most {limit} mutations; "
                        f"this one has {len(mutations)}. Nothing was applied; send them in "
                        "smaller batches.", extra={"max_batch": limit})
    problems = []
    for index, mutation in enumerate(mutations):
        mid = mutation.get("mid") if isinstance(mutation.get("mid"), str) else None
        for problem in validate(PUSH_MUTATION, mutation):
            problems.append({"index": index, "mid": mid, **problem.as_dict()})
    if problems:
        raise SyncError(400, "invalid_request", _summary(problems), problems=problems)


def _protocol_problem(problem) -> dict:
    found = problem.as_dict()
    if found["field"] == "protocol":
        found["message"] = f"Protocol must be {PROTOCOL}."
    return found


def _summary(problems: list[dict]) -> str:
    first = problems[0]
    where = f"mutation {first['index']}: " if "index" in first else ""
    more = f" ({len(problems) - 1} more problem{'s' if len(problems) > 2 else ''} listed)" \
        if len(problems) > 1 else ""
    return f"Nothing was applied. {where}{first['message']}{more}"
