"""Render shared templates from plain-dict contexts, as the service worker will.

Templates see only the context dict (no request, session, url_for or ORM objects),
so Jinja2 here and Nunjucks in the worker render them the same.
"""
from __future__ import annotations

from flask import g, get_flashed_messages, render_template
from flask_login import current_user
from flask_wtf.csrf import generate_csrf

from app.domain import roles as r
from app.extensions import db, htmx
from app.models import Clinic
from app.web.sessions import clinics_of


def shell_context(with_messages: bool = True) -> dict:
    """What every page shows around its content: who, where, navigation; and the messages left
    for this page, which reading takes away (so a caller that shows none must not read them)."""
    messages = get_flashed_messages(with_categories=True) if with_messages else []
    context = {"csrf_token": generate_csrf(), "request_id": g.get("request_id"),
               "messages": [{"category": c, "text": t} for c, t in messages],
               "user": None, "nav": []}
    if not current_user.is_authenticated:
        return context
    roles = current_user.roles
    clinic = db.session.get(Clinic, current_user.clinic_id) if current_user.clinic_id else None
    clinics = [db.session.get(Clinic, cid) for cid in clinics_of(current_user.user)]
    context["user"] = {
        "id": current_user.user.id, "username": current_user.user.username,
        "display_name": current_user.user.display_name,
        "roles": [r.ROLE_LABELS[x] for x in sorted(roles)],
        "clinic": {"id": clinic.id, "name": clinic.name} if clinic else None,
        "clinics": [{"id": c.id, "name": c.name} for c in clinics if c],
    }
    nav = []
    if r.can_read_patients(roles):
        station = r.home_station(roles)
        nav += [{"href": f"/worklist/{station}", "label": "Worklist", "key": "worklist"},
                {"href": "/patients", "label": "Patients", "key": "patients"},
                {"href": "/patients/new", "label": "Register", "key": "register"},
                {"href": "/conflicts", "label": "Review", "key": "conflicts"}]
    if r.can_break_glass(roles):
        # Search finds only the clinic's patients; this finds one of another clinic.
        nav.append({"href": "/break-glass", "label": "Emergency access", "key": "break_glass"})
    if r.can_administer(roles) or r.can_view_audit(roles):
        nav.append({"href": "/admin/", "label": "Administration", "key": "admin"})
    context["nav"] = nav
    return context


def render(template: str, context: dict, fragment: str | None = None, status: int = 200):
    """The whole page for a navigation; only `fragment` for an htmx request that targets it."""
    name = fragment if fragment and htmx and not htmx.boosted else template
    shell = shell_context()
    if banner := g.get("break_glass_banner"):
        # A page opened under break-glass (app/web/break_glass.py) says so, and offers no
        # write forms: the grant lets the clinician read the record, not change it.
        shell["messages"].append(banner)
        if "can" in context:
            context = {**context, "can": {key: False for key in context["can"]}}
    return render_template(name, **shell, **context), status
