"""Sync protocol v1 (DESIGN.md §5): push, pull, live pokes, heartbeat and its OpenAPI document."""
from __future__ import annotations

import logging

from flask import Blueprint, Flask, current_app, g, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import BadRequest, MethodNotAllowed, RequestEntityTooLarge

from app import json_codec
from app.extensions import compress, csrf, db
from app.models.records import to_json_value
from app.models.types import utcnow
from app.services import audit
from app.services.apply import BatchNeedsCare
from app.services.audit import AuditUnavailable
from sync_api import events, openapi, turns
from sync_api.auth import current_actor, require_clinical
from sync_api.clients import claim
from sync_api.errors import SyncError
from sync_api.pull import horizon, pull
from sync_api.push import push_batch
from sync_api.wire import HEARTBEAT_REQUEST, PULL_REQUEST, json_body, push_body

log = logging.getLogger("clinic.sync")
bp = Blueprint("sync", __name__, url_prefix="/sync/v1")
csrf.exempt(bp)  # browsers are checked in auth.current_actor; bearer clients carry no cookie


def register_sync(app: Flask) -> None:
    app.extensions["sync_turns"] = turns.Turns(app.config["SYNC_RUNNING_REQUESTS"])
    app.register_blueprint(bp)
    events.init_app(app)

    @app.after_request
    def _allow_header(response):
        # A wrong method fails in routing, before this blueprint is chosen, so the app's
        # generic error page answers; a client still needs Allow to learn the right method.
        failed = request.routing_exception
        if (isinstance(failed, MethodNotAllowed) and failed.valid_methods
                and request.path.startswith(bp.url_prefix + "/")
                and "Allow" not in response.headers):
            response.headers["Allow"] = ", ".join(sorted(failed.valid_methods))
        return response


@bp.before_request
def _limit_body():
    request.max_content_length = current_app.config["SYNC_MAX_BODY_BYTES"]


_TAKES_TURNS = {"sync.push_route": turns.WRITE, "sync.pull_route": turns.READ,
                "sync.heartbeat_route": turns.READ}


@bp.before_request
def _take_turn():
    # Before authentication, whose query would already hold a pooled connection.
    kind = _TAKES_TURNS.get(request.endpoint)
    if kind is not None and not turns.begin(kind):
        return _sync_error(_busy("The server is busy with other devices"))
    return None


@bp.teardown_request
def _give_back_turn(_exc):
    turns.end()


@bp.errorhandler(SyncError)
def _sync_error(exc: SyncError):
    db.session.rollback()
    return jsonify(exc.body(g.get("request_id"))), exc.status, exc.headers


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc):
    limit = current_app.config["SYNC_MAX_BODY_BYTES"]
    return _sync_error(SyncError(
        413, "too_large", f"The body is larger than this server accepts ({limit} bytes). "
        "Nothing was applied; send the mutations in smaller batches.",
        extra={"max_bytes": limit}))


@bp.errorhandler(BadRequest)
def _bad_request(exc):
    # Werkzeug's own 400s (a form body that cannot be parsed, say) in the sync error shape.
    message = "The request could not be read."
    return _sync_error(SyncError(400, "invalid_request", f"{message} Nothing was applied.",
                                 problems=[{"field": "", "message": exc.description or message}]))


@bp.errorhandler(AuditUnavailable)
def _audit_unavailable(exc):
    db.session.rollback()
    log.error("audit write failed, sync refused: %s (request %s)", exc, g.get("request_id"))
    return _sync_error(_busy("The access log could not be written"))


# Only faults that pass (a lock wait, a lost connection, a serialization failure) get a 503
# and a retry; a programming error stays a 500, so it is seen rather than retried forever.
@bp.errorhandler(OperationalError)
@bp.errorhandler(InterfaceError)
@bp.errorhandler(PoolTimeout)
def _database_fault(exc):
    db.session.rollback()
    log.warning("database fault during sync, answered 503: %s (request %s)", exc,
                g.get("request_id"))
    return _sync_error(_busy("The database did not answer in time"))


def _busy(what: str) -> SyncError:
    return SyncError(503, "unavailable", f"{what}. Nothing from this request was applied; "
                     "everything is kept on the device and will be sent again.",
                     headers={"Retry-After": "2"})


@bp.post("/push")
def push_route():
    actor = current_actor()
    require_clinical(actor)
    body = push_body()
    client = claim(actor, body["client_id"], body.get("telemetry"))
    try:
        status, payload = push_batch(actor, client, body["mutations"])
    except BatchNeedsCare:
        # Written together without a savepoint, something in the batch was refused: nothing
        # of this transaction stays, and the batch is applied again answering each mutation.
        db.session.rollback()
        client = claim(actor, body["client_id"], body.get("telemetry"))
        status, payload = push_batch(actor, client, body["mutations"], careful=True)
    db.session.commit()
    return _json_answer(payload, status)


@bp.post("/pull")
@compress.compressed()
def pull_route():
    actor = current_actor()
    require_clinical(actor)
    body = json_body(PULL_REQUEST)
    seen = horizon()
    client = claim(actor, body["client_id"], body.get("telemetry"), pulling=True)
    limit = body.get("limit") or current_app.config["SYNC_PULL_LIMIT"]
    payload = pull(actor, client, body.get("cursor"), limit, seen)
    _audit_reads(actor, client.client_id, payload["changes"])
    db.session.commit()
    return _json_answer(payload)


def _json_answer(payload: dict, status: int = 200):
    # Not jsonify: it sorts every key of every record, and a pull page holds thousands.
    return current_app.response_class(json_codec.dumps(payload) + b"\n", status=status,
                                      mimetype="application/json")


@bp.post("/heartbeat")
def heartbeat_route():
    actor = current_actor()
    require_clinical(actor)
    body = json_body(HEARTBEAT_REQUEST)
    client = claim(actor, body["client_id"], body.get("telemetry"))
    payload = {"last_seq": client.last_seq, "server_time": to_json_value(utcnow())}
    db.session.commit()
    return jsonify(payload)


@bp.get("/events")
def events_route():
    actor = current_actor()
    require_clinical(actor)
    db.session.commit()  # a stream may last a minute: it must not hold a connection
    return events.stream(actor.clinic_id)


@bp.get("/openapi.json")
def openapi_route():
    return jsonify(openapi.document())


def _audit_reads(actor, client_id: str, changes: list[dict]) -> None:
    """One event per patient whose records went to the device (evictions are not reads)."""
    patients: dict[str, int] = {}
    for change in changes:
        if change["op"] != "put":
            continue
        pid = change["id"] if change["entity"] == "patient" else change["record"].get("patient_id")
        patients[pid] = patients.get(pid, 0) + 1
    turns.step_aside()
    audit.append([audit.AuditEntry(
        action="sync.pull", user_id=actor.user_id, username=actor.username,
        role=actor.role_names, clinic_id=actor.clinic_id, patient_id=pid, device=client_id,
        request_id=actor.request_id, detail={"records": count})
        for pid, count in patients.items()])
