"""The OpenAPI 3.1 description of /sync/v1, built from the same schemas the server checks with."""
from __future__ import annotations

import copy

from app.domain.mutations import MUTATION_TYPES
from sync_api.wire import (HEARTBEAT_REQUEST, MAX_DEPTH, PULL_REQUEST, PUSH_MUTATION, PUSH_REQUEST,
                           TELEMETRY)

_REF = "#/components/schemas/"

RESULT = {
    "type": "object",
    "required": ["mid", "status"],
    "properties": {
        "mid": {"type": "string"}, "seq": {"type": "integer"},
        "status": {"enum": ["applied", "duplicate", "conflict", "rejected"]},
        "entity": {"type": "string"}, "entity_id": {"type": "string"},
        "version": {"type": "integer"}, "record": {"type": "object"},
        "conflict": {"type": "object", "required": ["fields", "server"], "properties": {
            "fields": {"type": "array", "items": {"type": "string"}},
            "server": {"type": "object"},
            "applied": {"type": "array", "items": {"type": "string"}}}},
        "error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": {"type": "string"}, "message": {"type": "string"},
            "problems": {"type": "array"}}},
    },
}
PUSH_RESPONSE = {"type": "object", "required": ["results", "last_seq"], "properties": {
    "results": {"type": "array", "items": {"$ref": _REF + "Result"}},
    "last_seq": {"type": "integer", "minimum": 0}}}
OUT_OF_ORDER = {"type": "object", "required": ["error", "expected_seq", "results", "last_seq"],
                "properties": {"error": {"const": "out_of_order"},
                               "expected_seq": {"type": "integer", "minimum": 1},
                               "message": {"type": "string"},
                               "results": {"type": "array", "items": {"$ref": _REF + "Result"}},
                               "last_seq": {"type": "integer", "minimum": 0}}}
CHANGE = {"type": "object", "required": ["op", "entity", "id"], "properties": {
    "op": {"enum": ["put", "evict"]}, "entity": {"type": "string"}, "id": {"type": "string"},
    "version": {"type": "integer"}, "record": {"type": "object"}}}
PULL_RESPONSE = {"type": "object",
                 "required": ["cursor", "has_more", "reset", "last_seq", "changes"],
                 "properties": {"cursor": {"type": "string"}, "has_more": {"type": "boolean"},
                                "reset": {"type": "boolean"},
                                "last_seq": {"type": "integer", "minimum": 0},
                                "changes": {"type": "array", "items": {"$ref": _REF + "Change"}},
                                "server_time": {"type": "string", "format": "date-time"}}}
HEARTBEAT_RESPONSE = {"type": "object", "required": ["last_seq", "server_time"], "properties": {
    "last_seq": {"type": "integer", "minimum": 0},
    "server_time": {"type": "string", "format": "date-time"}}}
PROBLEM = {"type": "object", "required": ["field", "message"], "properties": {
    "field": {"type": "string", "description": "Dotted path to the value; within a mutation, "
                                              "relative to it; empty for the whole"},
    "message": {"type": "string"},
    "index": {"type": "integer", "minimum": 0,
              "description": "The mutation's position in the batch (push only)"},
    "mid": {"type": ["string", "null"], "description": "The mutation's mid, if it had one"}}}
ERROR = {"type": "object", "required": ["error", "message"], "properties": {
    "error": {"type": "string", "description": "A stable code: invalid_request, too_large, "
              "too_many_mutations, unauthenticated, csrf_failed, forbidden, client_mismatch, "
              "unavailable"},
    "message": {"type": "string", "description": "What happened and what to do, for a person"},
    "request_id": {"type": "string"},
    "problems": {"type": "array", "items": {"$ref": _REF + "Problem"},
                 "description": "Every problem found (400 only)"},
    "max_bytes": {"type": "integer", "description": "The body size limit (413 too_large)"},
    "max_batch": {"type": "integer",
                  "description": "Mutations one push may hold (413 too_many_mutations)"}}}

TEXT_RULES = ("Besides its JSON Schema, a request body must be UTF-8 JSON without NaN or "
              "Infinity, nested at most %d levels deep, with no U+0000 (NUL) in any string or "
              "field name; anything else is a 400 listing where. A mutation's `data` must also "
              "fit its type's schema, or the mutation is answered `rejected` with code "
              "`invalid` (not a 400).")


def _json(schema_name: str, description: str) -> dict:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": _REF + schema_name}}}}


def _errors(*statuses: int) -> dict:
    text = {400: "Malformed request; nothing applied", 401: "Not signed in; nothing applied",
            403: "Not allowed; nothing applied", 413: "Too large; nothing applied",
            503: "Busy or a transient fault; retry after Retry-After seconds"}
    answers = {str(s): _json("Error", text[s]) for s in statuses}
    if 401 in statuses:
        answers["401"]["headers"] = {"WWW-Authenticate": {
            "description": "The scheme to use: Bearer", "required": True,
            "schema": {"type": "string"}}}
    if 503 in statuses:
        answers["503"]["headers"] = {"Retry-After": {
            "description": "Seconds to wait before sending again", "required": True,
            "schema": {"type": "string"}}}
    return answers


def _post(summary: str, request: str, ok: str, extra: dict | None = None) -> dict:
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, **_json(request, summary)},
        "responses": {"200": _json(ok, "Done"), **(extra or {}),
                      **_errors(400, 401, 403, 413, 503)}}}


def document() -> dict:
    push_mutation = copy.deepcopy(PUSH_MUTATION)
    push_mutation["description"] = "Types: " + ", ".join(sorted(MUTATION_TYPES))
    push_request = copy.deepcopy(PUSH_REQUEST)
    push_request["properties"]["mutations"]["items"] = {"$ref": _REF + "Mutation"}
    push_request["properties"]["telemetry"] = {"$ref": _REF + "Telemetry"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Clinic record sync", "version": "1",
                 "description": "Exactly-once, ordered push; gap-free pull; live pokes. "
                                + TEXT_RULES % MAX_DEPTH},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/sync/v1/push": _post("Apply a client's mutations in seq order", "PushRequest",
                                   "PushResponse",
                                   {"409": _json("OutOfOrder", "A seq gap; send from expected_seq")}),
            "/sync/v1/pull": _post("Changes this device may hold, after its cursor",
                                   "PullRequest", "PullResponse"),
            "/sync/v1/heartbeat": _post("Report device telemetry", "HeartbeatRequest",
                                        "HeartbeatResponse"),
            "/sync/v1/events": {"get": {
                "summary": "Server-Sent Events: 'ready' and 'poke' mean pull now",
                "responses": {"200": {"description": "An event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                              **_errors(401, 403, 503)}}},
            "/sync/v1/openapi.json": {"get": {
                "summary": "This document", "security": [],
                "responses": {"200": {"description": "OpenAPI document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}}}},
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "A token from `flask tokens create USERNAME`"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session",
                            "description": "Browser session; POSTs also need X-CSRFToken"}},
            "schemas": {
                "PushRequest": push_request, "Mutation": push_mutation, "Telemetry": TELEMETRY,
                "PushResponse": PUSH_RESPONSE, "OutOfOrder": OUT_OF_ORDER, "Result": RESULT,
                "PullRequest": PULL_REQUEST, "PullResponse": PULL_RESPONSE, "Change": CHANGE,
                "HeartbeatRequest": HEARTBEAT_REQUEST, "HeartbeatResponse": HEARTBEAT_RESPONSE,
                "Error": ERROR, "Problem": PROBLEM},
        },
    }
