"""What the service worker needs from the server to run the app with no network.

Its own script, stamped with the version of everything it caches; the web app manifest; the
shared templates it renders with; and the signed-in person's session (who, where, what they
may do), which it keeps so pages render offline exactly as the server would render them.
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from flask import Blueprint, Response, current_app, g, get_flashed_messages, jsonify, request
from flask_login import current_user, login_required
from sqlalchemy import func, select

from app.contexts.common import allowed_types
from app.contexts.search import query_for_audit
from app.domain import roles as r
from app.crypto.outbox_escrow import current_escrow_keys
from app.domain.ids import is_uuid
from app.domain.mutations import IDENTIFIER_SYSTEMS, SEXES, schemas_for_browser
from app.domain.stations import ACTIVE_STATIONS, STATION_LABELS, next_stations, STATIONS
from app.domain.vitals import VITALS
from app.extensions import db
from app.models import ENTITY_MODELS, Clinic, MutationResult, User
from app.models.records import to_json_value
from app.models.types import utcnow
from app.web import auditing
from app.web.access import clinical_required
from app.web.rendering import render, shell_context
from app.web.security_headers import WORKER_POLICY, page_headers
from app.web.shared_templates import shared_template_sources

bp = Blueprint("offline", __name__)

# Everything the worker caches at install, besides the templates bundle (versioned below).
SHELL_ASSETS = ("css/*.css", "js/*.js", "vendor/*.js", "idb/*.js", "sw/*.js", "icons/*.png")
VERSION_MARK = "__SHELL_VERSION__"
ASSETS_MARK = "__SHELL_ASSETS__"


def _static_root() -> Path:
    return Path(current_app.static_folder)


def shell_assets() -> list[str]:
    root = _static_root()
    return sorted("/static/" + p.relative_to(root).as_posix()
                  for pattern in SHELL_ASSETS for p in root.glob(pattern))


def shell_version() -> str:
    """A hash of every byte the worker serves from its cache, and of the release name.

    It is written into the worker's own script, so any change to the shell changes the
    worker's bytes, and the browser installs the new worker next time it checks.
    """
    root = _static_root()
    files = [root / "sw.js", *[root / a.removeprefix("/static/") for a in shell_assets()],
             *sorted(Path(current_app.root_path, current_app.template_folder).rglob("*.html"))]
    # Hashed again only when a file changes: browsers ask for the worker on every navigation.
    stamp = (current_app.config.get("APP_RELEASE", ""),
             tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files))
    return _version_of(stamp)


@functools.lru_cache(maxsize=4)
def _version_of(stamp: tuple) -> str:
    release, files = stamp
    digest = hashlib.sha256(release.encode())
    top = Path(current_app.root_path).parent
    for name, _mtime, _size in files:
        # Named relative to the project, so every server of one release has one version.
        digest.update(Path(name).relative_to(top).as_posix().encode() + b"\0" + Path(name).read_bytes())
    return digest.hexdigest()[:20]


@bp.get("/sw.js")
def service_worker_get():
    source = (_static_root() / "sw.js").read_text()
    version = shell_version()
    assets = [*shell_assets(), f"/app/templates.json?v={version}", "/manifest.webmanifest"]
    body = (source.replace(VERSION_MARK, version)
            .replace(ASSETS_MARK, json.dumps(assets)))
    # The browser checks for a new worker at most this often; no-cache makes every check real.
    return Response(body, mimetype="text/javascript",
                    headers={"Cache-Control": "no-cache", "Service-Worker-Allowed": "/",
                             "Content-Security-Policy": WORKER_POLICY})


@bp.get("/manifest.webmanifest")
def manifest_get():
    icons = [{"src": f"/static/icons/{kind}-{size}.png", "sizes": f"{size}x{size}",
              "type": "image/png", "purpose": "maskable" if kind == "maskable" else "any"}
             for kind in ("icon", "maskable") for size in (192, 512)]
    manifest = {"name": "Clinic record", "short_name": "Clinic", "id": "/", "start_url": "/",
                "scope": "/", "display": "standalone", "orientation": "any",
                "background_color": "#f5f7f9", "theme_color": "#1b5e7a",
                "description": "The clinic's patient record, working with or without a network.",
                "icons": icons}
    return Response(json.dumps(manifest), mimetype="application/manifest+json",
                    headers={"Cache-Control": "no-cache"})


@bp.get("/app/templates.json")
def templates_get():
    # Templates hold no patient data; the worker fetches them at install, before sign-in.
    return jsonify(version=shell_version(), sources=shared_template_sources())


@bp.get("/app/session.json")
@login_required
def session_get():
    """Who is signed in on this device, and all the page furniture the worker needs to render
    their pages the way the server does."""
    roles = current_user.roles
    # The messages stay for the page they were left for.
    shell = shell_context(with_messages=False)
    shell.pop("messages")
    clinical = r.can_read_patients(roles) and bool(current_user.clinic_id)
    org = current_user.user.organization_id
    people = {row.id: row.display_name for row in db.session.execute(
        select(User.id, User.display_name).where(User.organization_id == org))}
    clinics = {c.id: c.name for c in db.session.execute(
        select(Clinic).where(Clinic.organization_id == org)).scalars()}
    return jsonify(
        user_id=current_user.user.id,
        clinic_id=current_user.clinic_id,
        offline=clinical,
        home_station=r.home_station(roles) if clinical else None,
        shell=shell,  # nosec B604: the page shell's data for the worker, not a subprocess flag
        can=allowed_types(roles),
        people=people,
        clinics=clinics,
        stations={"active": list(ACTIVE_STATIONS), "all": list(STATIONS), "labels": STATION_LABELS,
                  "next": {s: next_stations(s) for s in STATIONS}},
        vitals=[{"field": v.field, "label": v.label, "unit": v.unit, "code": v.code,
                 "min": v.minimum, "max": v.maximum, "step": v.step} for v in VITALS],
        sexes=list(SEXES),
        identifier_systems=list(IDENTIFIER_SYSTEMS),
        schemas=schemas_for_browser(),
        shell_version=shell_version(),
        pull_page=current_app.config["SYNC_BROWSER_PULL_PAGE"],
        request_timeout_ms=round(current_app.config["SYNC_BROWSER_REQUEST_TIMEOUT_SECONDS"] * 1000),
        page_headers=page_headers(current_app.config["APP_ENV"] == "production"),
        server_time=to_json_value(utcnow()),
        # Every session starts with a full sign-in (password and code, or a passkey): the
        # device counts its offline unlock window from here.
        signed_in_at=to_json_value(current_user.session_row.created_at) if current_user.session_row else None,
        escrow_key=current_escrow_keys().public_jwk(),
        device_unlock={"offline_hours": current_app.config["DEVICE_OFFLINE_UNLOCK_HOURS"],
                       "iterations": current_app.config["DEVICE_UNLOCK_ITERATIONS"],
                       "max_failures": current_app.config["DEVICE_UNLOCK_MAX_FAILURES"],
                       "idle_minutes": current_app.config["DEVICE_IDLE_LOCK_MINUTES"],
                       "cold_minutes": current_app.config["DEVICE_COLD_LOCK_MINUTES"],
                       "max_pin_failures": current_app.config["DEVICE_PIN_MAX_FAILURES"]},
        subset_estimate=_subset_estimate(request.args.get("client_id", "")) if clinical else 0,
    )


def _subset_estimate(client_id: str) -> int:
    """About how many records the device's first sync brings, for its progress bar."""
    # sync_api imports app.web, so importing it when this module loads would be circular.
    from sync_api.pull import BACKFILL_ORDER
    from sync_api.subset import subset_patient_ids
    actor = current_user.actor(request_id=g.get("request_id"), client_id=client_id or None)
    patients = subset_patient_ids(actor, client_id, utcnow())
    if not patients:
        return 0
    total = len(patients)
    ids = list(patients)
    for entity in BACKFILL_ORDER[1:]:
        model = ENTITY_MODELS[entity]
        for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            total += db.session.execute(select(func.count()).select_from(model).where(
                model.patient_id.in_(ids[start:start + 500]))).scalar_one()
    return total


@bp.get("/app/messages.json")
def messages_get():
    """Messages the server left for the next page, when the worker renders that page instead
    (a form the server handled just as the worker took over)."""
    return jsonify(messages=[{"category": c, "text": t}
                             for c, t in get_flashed_messages(with_categories=True)])


@bp.get("/device")
@login_required
def device_get():
    # The worker renders this page from what the device holds; the server cannot see a
    # device's queue, so without the worker the page says so.
    return render("device/status.html", {"device": None})


@bp.post("/device/discarded")
@clinical_required
def device_discarded_post():
    """A person discarded a change the server had refused: recorded in the audit log."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("mid"), str):
        return jsonify(error="invalid", message="Send the discarded mutation's mid."), 400
    # Only a change this person sent and the server refused can be discarded.
    refused = db.session.get(MutationResult, body["mid"])
    if refused is None or refused.user_id != current_user.user.id or refused.status != "rejected":
        return jsonify(error="unknown", message="No change of yours with that id was refused; "
                       "nothing was recorded."), 404
    detail = {key: str(body[key])[:200] for key in
              ("mid", "type", "entity", "entity_id", "error_code", "request_id", "client_id")
              if body.get(key) is not None}
    # A refused change left no record on the server; the patient is the device's word for it.
    patient_id = body.get("patient_id") if is_uuid(body.get("patient_id")) else None
    auditing.record("mutation.discarded", patient_id=patient_id, detail=detail)
    return jsonify(recorded=True, request_id=g.get("request_id"))


READ_ACTIONS = ("patient.read", "patient.search", "patient.duplicate_check", "worklist.read")
READS_PER_REPORT = 500


@bp.post("/device/reads")
@clinical_required
def device_reads_post():
    """Patient pages the device showed from its own copy: each is an audit event, as a page
    from the server is (DESIGN.md §7), stamped with the device's time of the read."""
    body = request.get_json(silent=True)
    reads = body.get("reads") if isinstance(body, dict) else None
    if not isinstance(reads, list) or len(reads) > READS_PER_REPORT:
        return jsonify(error="invalid", message=f"Send up to {READS_PER_REPORT} reads as "
                       "'reads': [...]; nothing was recorded."), 400
    entries = []
    for read in reads:
        if not isinstance(read, dict) or read.get("action") not in READ_ACTIONS:
            return jsonify(error="invalid", message="Each read needs an action of "
                           f"{', '.join(READ_ACTIONS)}; nothing was recorded."), 400
        patients = [p for p in read.get("patient_ids") or [] if is_uuid(p)][:100]
        detail = {"source": "device", "at": str(read.get("at") or "")[:40],
                  **{k: str(v)[:200] for k, v in (read.get("detail") or {}).items()
                     if k in ("page", "q", "station", "visit_id")}}
        if "q" in detail:
            detail["q"] = query_for_audit(detail["q"])
        if not patients:
            entries.append(auditing.entry(read["action"], detail={**detail, "patients": 0}))
        entries += [auditing.entry(read["action"], patient_id=pid, detail=detail) for pid in patients]
    auditing.audit.append(entries)
    return jsonify(recorded=len(entries))
