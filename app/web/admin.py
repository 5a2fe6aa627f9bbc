"""Administration console: the organization's clinics, teams, users and roles, and the audit log."""
from __future__ import annotations

from datetime import datetime, timezone
from functools import wraps

from flask import Blueprint, abort, flash, redirect, request, session
from flask_login import current_user
from sqlalchemy import select

from app.domain import roles as r
from app.extensions import db
from app.models import AuditEvent
from app.models.records import to_json_value
from app.services import admin as svc
from app.web import auditing, sessions
from app.web.access import _requires, admin_required, audit_viewer_required
from app.web.rendering import render

bp = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_PAGE_SIZE = 100
console_required = _requires(lambda roles: r.can_administer(roles) or r.can_view_audit(roles))


@bp.get("/")
@console_required
def index_get():
    return render("admin/index.html", {"can_administer": r.can_administer(current_user.roles),
                                       "can_view_audit": r.can_view_audit(current_user.roles)})


def _parse_day(value: str, end: bool = False) -> datetime | None:
    try:
        day = datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return day.replace(hour=23, minute=59, second=59) if end else day


@bp.get("/audit")
@audit_viewer_required
def audit_get():
    filters = {k: request.args.get(k, "").strip()[:80] for k in ("patient", "user", "action", "from", "to")}
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if filters["patient"]:
        query = query.where(AuditEvent.patient_id == filters["patient"])
    if filters["user"]:
        query = query.where(AuditEvent.username == filters["user"])
    if filters["action"]:
        query = query.where(AuditEvent.action.startswith(filters["action"]))
    if filters["from"] and (start := _parse_day(filters["from"])):
        query = query.where(AuditEvent.at >= start)
    if filters["to"] and (stop := _parse_day(filters["to"], end=True)):
        query = query.where(AuditEvent.at <= stop)
    if not r.ORG_ADMIN in current_user.roles:
        query = query.where(AuditEvent.clinic_id == current_user.clinic_id)
    before = request.args.get("before", type=int)
    if before:
        query = query.where(AuditEvent.id < before)
    rows = db.session.execute(query.limit(AUDIT_PAGE_SIZE + 1)).scalars().all()
    events = [{"id": e.id, "at": to_json_value(e.at), "username": e.username, "role": e.role,
               "clinic_id": e.clinic_id, "patient_id": e.patient_id, "action": e.action,
               "outcome": e.outcome, "device": e.device, "request_id": e.request_id,
               "detail_items": [f"{k}={v}" for k, v in sorted((e.detail or {}).items())]}
              for e in rows[:AUDIT_PAGE_SIZE]]
    auditing.record("audit.view", detail={"filters": filters})
    return render("admin/audit.html", {"filters": filters, "events": events,
                                       "next_before": events[-1]["id"] if len(rows) > AUDIT_PAGE_SIZE else None},
                  fragment="admin/_audit_rows.html")
