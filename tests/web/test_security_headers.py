"""Every answer tells the browser to refuse what the app never does."""
from __future__ import annotations

import pytest

from app import create_app
from app.domain import roles as r
from tests.services.test_field_encryption import PRODUCTION_KEYS


def _directives(policy: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in policy.split("; ")}


@pytest.mark.parametrize("path", ["/login", "/patients", "/static/js/app.js"])
def test_pages_forbid_inline_script_eval_and_framing(app, world, client_for, path):
    client = client_for(world.user(r.NURSE))
    with client.get(path) as answer:
        policy = _directives(answer.headers["Content-Security-Policy"])
        headers = answer.headers
    assert policy["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval'
    assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "Strict-Transport-Security" not in headers  # plain HTTP in development


def test_only_the_worker_may_eval(app):
    with app.test_client().get("/sw.js") as answer:
        policy = _directives(answer.headers["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'", "'unsafe-eval'"]  # it compiles the templates
    assert policy["frame-ancestors"] == ["'none'"]


def test_htmx_is_configured_without_eval_or_a_history_cache(world, client_for):
    page = client_for(world.user(r.NURSE)).get("/patients").get_data(as_text=True)
    assert '"allowEval": false' in page and '"historyCacheSize": 0' in page
    assert '"includeIndicatorStyles": false' in page  # its injected <style> would be refused


def test_production_sends_hsts_and_a_host_only_secure_session_cookie(monkeypatch, tmp_path):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "x" * 40)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/c.db")
    monkeypatch.setenv("AUDIT_DATABASE_URL", f"sqlite:///{tmp_path}/a.db")
    for name, value in PRODUCTION_KEYS.items():
        monkeypatch.setenv(name, value)
    app = create_app({"TESTING": True})
    assert app.config["SESSION_COOKIE_NAME"] == "__Host-session"
    assert app.config["SESSION_COOKIE_SECURE"] is True
    with app.test_client() as client, client.get("/manifest.webmanifest") as answer:
        assert answer.headers["Strict-Transport-Security"].startswith("max-age=31536000")
