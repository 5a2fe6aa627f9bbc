"""The request bodies of /sync/v1, as JSON Schemas, and their checks with per-mutation problems."""
from __future__ import annotations

import json
import math

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
PUSH_MUTATION = {**ENVELOPE_SCHEMA, "required": [*ENVELOPE_SCHEMA["required"], "seq"],
                 "x-label": "Mutation"}

def _request(required: tuple[str, ...] = (), **properties: dict) -> dict:
    """A request body: the protocol and the client's id, telemetry if it has some, and more."""
    return {
        "type": "object",
        "required": ["protocol", "client_id", *required],
        "properties": {"protocol": {"const": PROTOCOL, "x-label": "Protocol"},
                       "client_id": CLIENT_ID, **properties, "telemetry": TELEMETRY},
        "additionalProperties": False,
    }


# Each pushed mutation is checked on its own against PUSH_MUTATION, so its problems carry its
# index and mid; the OpenAPI document names that schema for the items.
PUSH_REQUEST = _request(("mutations",),
                        mutations={"type": "array", "x-label": "Mutations"})
PULL_REQUEST = _request(
    cursor={"type": ["string", "null"], "maxLength": 2000, "x-label": "Cursor"},
    limit={"type": "integer", "minimum": 1, "maximum": 5000, "x-label": "Limit"})
HEARTBEAT_REQUEST = _request()


# Deeper than any request needs; bounded so nothing later recurses past Python's stack.
MAX_DEPTH = 32
# The largest integer a float holds exactly (and a browser's Number): 2.0 is read as 2.
_EXACT = 2**53


class _NotJSON(ValueError):
    pass


def json_body(schema: dict) -> dict:
    """The request's JSON object, or a 400 that lists every problem found."""
    body = _read_object()
    _raise_if(_text_problems(body, None) or _schema_problems(schema, body))
    return body


def push_body() -> dict:
    """The push request, or a 413 for too many mutations, or a 400 listing every problem;
    a mutation's problems name it by index and mid."""
    body = _read_object()
    mutations = body.get("mutations")
    limit = current_app.config["SYNC_MAX_BATCH"]
    if isinstance(mutations, list) and len(mutations) > limit:
        raise SyncError(413, "too_many_mutations", f"A push holds at most {limit} mutations; "
                        f"this one has {len(mutations)}. Nothing was applied; send them in "
                        "smaller batches.", extra={"max_batch": limit})
    problems = [] if _plain_text(request.get_data(cache=True), body) else \
        _text_problems(body, mutations if isinstance(mutations, list) else None)
    if not problems:
        # The request's schema asks only for a list there, and its items are checked one by
        # one below: going through them here as well cost almost as much as those checks.
        problems = _schema_problems(
            PUSH_REQUEST, {**body, "mutations": []} if isinstance(mutations, list) else body)
        for index, mutation in enumerate(mutations if isinstance(mutations, list) else []):
            problems += [_of_mutation(mutations, index, problem.as_dict())
                         for problem in validate(PUSH_MUTATION, mutation)]
    _raise_if(problems)
    return body


def _read_object() -> dict:
    if not request.is_json:
        raise _invalid("Send a JSON body with Content-Type application/json.")
    raw = request.get_data(cache=True)  # over SYNC_MAX_BODY_BYTES: RequestEntityTooLarge
    try:
        body = json.loads(raw, parse_float=_number, parse_constant=_not_json)
    except (ValueError, RecursionError):
        raise _invalid("The body is not valid JSON (UTF-8, no NaN or Infinity, numbers of "
                       "at most 4300 digits).") from None
    if not isinstance(body, dict):
        raise _invalid("The body must be a JSON object.")
    return body


def _number(text: str) -> float | int:
    value = float(text)
    if not math.isfinite(value):
        raise _NotJSON(text)
    return int(value) if value.is_integer() and abs(value) <= _EXACT else value


def _not_json(text: str):
    raise _NotJSON(text)


def _invalid(message: str) -> SyncError:
    return SyncError(400, "invalid_request", f"{message} Nothing was applied.",
                     problems=[{"field": "", "message": message}])


def _text_problems(body: dict, mutations: list | None) -> list[dict]:
    """Nesting too deep, NUL characters and unpaired surrogates: valid JSON, but PostgreSQL
    cannot store them (and a surrogate cannot be encoded at all), so they are refused here
    rather than failing the transaction later. Inside `mutations`, a problem names its
    mutation."""
    problems: list[dict] = []
    stack: list[tuple[list[str], object]] = [([], body)]
    while stack:
        path, value = stack.pop()
        if len(path) > MAX_DEPTH:
            problems.append(_at(mutations, path[:MAX_DEPTH],
                                f"Nested more than {MAX_DEPTH} levels deep."))
            continue
        if isinstance(value, str) and not _storable(value):
            problems.append(_at(mutations, path, "Contains a NUL character or an unpaired "
                                                 "surrogate, which cannot be stored."))
        elif isinstance(value, dict):
            for key, item in value.items():
                if not _storable(key):
                    problems.append(_at(mutations, path, "A field name contains a NUL "
                                                         "character or an unpaired surrogate."))
                    continue
                stack.append(([*path, key], item))
        elif isinstance(value, list):
            stack.extend(([*path, str(i)], item) for i, item in enumerate(value))
    unique = {(p.get("index"), p["field"]): p for p in problems}
    return sorted(unique.values(), key=lambda p: (p.get("index", -1), p["field"]))


def _plain_text(raw: bytes, body: dict) -> bool:
    """No problem _text_problems would find, known without looking at every string: in JSON
    sent as UTF-8, a NUL can only come from a \\u escape, and an unpaired surrogate from an
    escape or the bytes ED A0-ED BF (which the decoder lets through); then only the depth is
    left to check, on the containers alone. A body with either is looked at in full."""
    if json.detect_encoding(raw) != "utf-8" or b"\\u" in raw or b"\xed" in raw:
        return False
    stack: list[tuple[int, object]] = [(0, body)]
    while stack:
        depth, value = stack.pop()
        items = value.values() if isinstance(value, dict) else value
        if depth >= MAX_DEPTH:
            if items:
                return False
            continue
        stack.extend((depth + 1, item) for item in items if isinstance(item, (dict, list)))
    return True


def _storable(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _at(mutations: list | None, path: list[str], message: str) -> dict:
    if mutations is not None and len(path) >= 2 and path[0] == "mutations":
        return _of_mutation(mutations, int(path[1]),
                            {"field": ".".join(path[2:]), "message": message})
    return {"field": ".".join(path), "message": message}


def _of_mutation(mutations: list, index: int, problem: dict) -> dict:
    mutation = mutations[index]
    mid = mutation.get("mid") if isinstance(mutation, dict) else None
    return {"index": index, "mid": mid if isinstance(mid, str) and _storable(mid) else None,
            **problem}


def _schema_problems(schema: dict, body: dict) -> list[dict]:
    return [_protocol_problem(p) for p in validate(schema, body)]


def _raise_if(problems: list[dict]) -> None:
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
