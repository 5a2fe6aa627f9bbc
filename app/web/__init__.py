"""HTML side of the app: request hooks, errors, sign-in loaders and the page blueprints."""
from __future__ import annotations

import logging
import re
import uuid

from flask import Flask, g, jsonify, redirect, request
from flask_login import current_user

from app.database import reset_write_intent, set_write_intent
from app.extensions import db, htmx, login_manager
from app.services.audit import AuditUnavailable
from app.web import account, admin, auth, clinical, conflicts, offline, patients, security_headers, worklist
from app.web import break_glass, device_keys
from app.web.filters import FILTERS
from app.web.rendering import render
from app.web.sessions import load

log = logging.getLogger("clinic")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9-]{8,64}$")

ERROR_TEXT = {
    400: ("The request could not be read", "Something in what was sent is not valid. Nothing was changed."),
    403: ("Not allowed", "Your role does not allow this page or action. Nothing was changed."),
    404: ("Not found", "There is nothing at this address in your clinic."),
    405: ("Not allowed", "This address does not accept that kind of request."),
    413: ("Too large", "What was sent is larger than this server accepts. Nothing was changed."),
    429: ("Too many attempts", "There were too many attempts in a short time, so this one was "
          "not carried out and nothing was changed. Wait a few minutes and try again."),
    500: ("Something went wrong", "The server hit an unexpected problem. Nothing was changed. "
          "Try again; if it happens again, give the reference below to your administrator."),
    503: ("The access log is unavailable", "Every access to patient records must be recorded, and "
          "the record could not be written, so nothing was shown or changed. Try again shortly; "
          "if it continues, tell your administrator and give the reference below."),
}


def register_web(app: Flask) -> None:
    for name, func in FILTERS.items():
        app.jinja_env.filters[name] = func
    for module in (auth, account, patients, clinical, worklist, conflicts, admin, offline,
                   break_glass, device_keys):
        app.register_blueprint(module.bp)

    security_headers.init_app(app)
    login_manager.user_loader(load)
    login_manager.session_protection = None  # the server-side session is the protection

    @login_manager.unauthorized_handler
    def unauthorized():
        if request.path.startswith("/sync/") or request.accept_mimetypes.best == "application/json":
            return jsonify(error="unauthenticated",
                           message="Sign in again; nothing was applied."), 401
        target = "/login?next=" + request.full_path.rstrip("?")
        if htmx:
            return "", 204, {"HX-Redirect": target}
        return redirect(target)

    @app.before_request
    def _begin_request():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.match(incoming) else str(uuid.uuid4())
        # GETs only read clinical data, so on SQLite they need not queue for the write lock.
        g.write_intent_token = set_write_intent(request.method not in ("GET", "HEAD"))

    @app.after_request
    def _finish_request(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        if current_user and current_user.is_authenticated:
            response.headers["Cache-Control"] = "no-store"  # patient data stays off disk caches
        return response

    @app.teardown_request
    def _end_request(_exc):
        token = g.pop("write_intent_token", None)
        if token is not None:
            reset_write_intent(token)

    def error_page(status: int):
        title, text = ERROR_TEXT[status]
        if request.path.startswith("/sync/"):
            return jsonify(error=title, message=text, request_id=g.get("request_id")), status
        return render("error.html", {"title": title, "text": text, "status": status},
                      status=status)

    for status in (400, 403, 404, 405, 413, 429):
        app.register_error_handler(status, lambda exc, s=status: error_page(s))

    @app.errorhandler(AuditUnavailable)
    def _audit_unavailable(exc):
        db.session.rollback()
        log.error("audit write failed, access denied: %s (request %s)", exc, g.get("request_id"))
        return error_page(503)

    @app.errorhandler(500)
    def _server_error(exc):
        db.session.rollback()
        log.exception("unhandled error (request %s)", g.get("request_id"))
        return error_page(500)
