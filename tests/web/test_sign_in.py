"""Signing in (password, then a one-time code), sessions, CSRF, rate limits and API tokens."""
from __future__ import annotations

import hashlib
import re
import time
from datetime import timedelta
from urllib.parse import urlsplit

import pyotp
import pytest
from sqlalchemy import func, select

from app.domain import roles as r
from app.extensions import db
from app.models import ApiToken, Note, Patient, User, UserSession
from app.models.types import utcnow
from app.services import tokens
from tests.conftest import PASSWORD, config

BAD_CREDENTIALS = "The username or password is not right. Check them and try again."


@pytest.fixture
def app_overrides(request):
    """Configuration for one test: parametrize `app_overrides` indirectly to change it."""
    return {"PROPAGATE_EXCEPTIONS": False, **getattr(request, "param", {})}



# --- Helpers --------------------------------------------------------------------------------

def fresh(user: User) -> User:
    db.session.rollback()
    db.session.expire_all()
    return db.session.get(User, user.id)


def next_code(user: User) -> str:
    """A code the server has not seen yet: the current one, or the next if it was used."""
    user = fresh(user)
    step = max(int(time.time() // 30), (user.totp_last_step or -1) + 1)
    return pyotp.TOTP(user.totp_secret).at(step * 30)


def alert(response) -> str | None:
    found = re.search(r'role="alert">([^<]*)<', response.get_data(as_text=True))
    return found.group(1) if found else None


def password_step(client, username: str, password: str = PASSWORD, next_url: str | None = None):
    data = {"username": username, "password": password}
    if next_url is not None:
        data["next"] = next_url
    return client.post("/login", data=data)


def sign_in(client, user: User, next_url: str | None = None):
    """The whole sign-in as a browser does it; returns the answer to the code step."""
    first = password_step(client, user.username, next_url=next_url)
    assert (first.status_code, first.headers["Location"]) == (302, "/login/code"), alert(first)
    assert client.get("/login/code").status_code == 200
    return client.post("/login/code", data={"code": next_code(user)})


def signed_in(client) -> bool:
    response = client.get("/patients")
    if response.status_code == 200:
        return True
    assert response.status_code == 302 and urlsplit(response.headers["Location"]).path == "/login"
    return False


def sessions_of(user: User) -> list[UserSession]:
    db.session.rollback()
    db.session.expire_all()
    return list(db.session.execute(select(UserSession).where(UserSession.user_id == user.id)
                                   .order_by(UserSession.created_at)).scalars())


def age_sessions(user: User, **ago: timedelta) -> None:
    for row in sessions_of(user):
        for column, delta in ago.items():
            setattr(row, column, utcnow() - delta)
    db.session.commit()


def answer(send, *args, **kwargs):
    """The response; a request that crashes even the error page fails the test plainly."""
    try:
        return send(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any escape means the user got no proper answer
        db.session.rollback()
        pytest.fail(f"the request crashed instead of answering: {exc!r}"[:400])


def count(model) -> int:
    db.session.rollback()
    return db.session.scalar(select(func.count()).select_from(model))


# --- Password, then a one-time code ------------------------------------------------------------

def test_password_then_code_signs_in(app, world):
    clinician = world.user(r.CLINICIAN, "A")
    client = app.test_client()
    assert not signed_in(client)
    done = sign_in(client, clinician)
    assert (done.status_code, done.headers["Location"]) == (302, "/")
    assert client.get("/").headers["Location"] == "/worklist/consultation"
    assert signed_in(client)
    [row] = sessions_of(clinician)
    assert row.ended_at is None and row.clinic_id == world.clinics["A"].id


def test_password_alone_does_not_sign_in(app, world):
    client = app.test_client()
    password_step(client, world.user(r.NURSE, "A").username)
    assert not signed_in(client)


def test_sign_in_returns_to_the_page_first_asked_for(app, world, register):
    pid = register(world.actor(r.REGISTRATION_CLERK))
    client = app.test_client()
    bounced = client.get(f"/patients/{pid}")
    assert bounced.status_code == 302
    assert bounced.headers["Location"] == f"/login?next=/patients/{pid}"
    done = sign_in(client, world.user(r.NURSE, "A"), next_url=f"/patients/{pid}")
    assert done.headers["Location"] == f"/patients/{pid}"


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/x",
                                    "/\\evil.example/x", "javascript:alert(1)"])
def test_sign_in_never_sends_the_browser_off_site(app, world, target):
    done = sign_in(app.test_client(), world.user(r.NURSE, "A"), next_url=target)
    location = done.headers["Location"]
    assert location.startswith("/") and not location.startswith("//")
    assert urlsplit(location).netloc == "" and "\\" not in location


def test_a_code_works_once(app, world):
    nurse = world.user(r.NURSE, "A")
    code = next_code(nurse)
    first = app.test_client()
    password_step(first, nurse.username)
    assert first.post("/login/code", data={"code": code}).status_code == 302
    # Someone who saw the code (over a shoulder, or a replayed request) tries it again.
    second = app.test_client()
    password_step(second, nurse.username)
    replay = second.post("/login/code", data={"code": code})
    assert replay.status_code == 401
    assert "already used" in alert(replay)
    assert not signed_in(second)


def test_wrong_code_is_refused(app, world):
    nurse = world.user(r.NURSE, "A")
    client = app.test_client()
    password_step(client, nurse.username)
    wrong = "000000" if next_code(nurse) != "000000" else "111111"
    refused = client.post("/login/code", data={"code": wrong})
    assert refused.status_code == 401 and not signed_in(client)


def test_code_step_expires_after_five_minutes(app, world):
    nurse = world.user(r.NURSE, "A")
    client = app.test_client()
    password_step(client, nurse.username)
    with client.session_transaction() as sess:
        sess["pending_mfa"] = {**sess["pending_mfa"], "at": sess["pending_mfa"]["at"] - 301}
    assert client.get("/login/code").headers["Location"] == "/login"
    late = client.post("/login/code", data={"code": next_code(nurse)})
    assert late.headers["Location"] == "/login" and not signed_in(client)


def test_wrong_password_and_unknown_username_get_the_same_answer(app, world):
    nurse = world.user(r.NURSE, "A")
    wrong_password = password_step(app.test_client(), nurse.username, "not the password")
    unknown_user = password_step(app.test_client(), "nobody.here", PASSWORD)
    assert wrong_password.status_code == unknown_user.status_code == 401
    assert alert(wrong_password) == alert(unknown_user) == BAD_CREDENTIALS


def test_disabled_user_cannot_sign_in_and_gets_the_ordinary_answer(app, world):
    nurse = world.user(r.NURSE, "A")
    nurse.disabled_at = utcnow()
    db.session.commit()
    refused = password_step(app.test_client(), nurse.username)
    assert refused.status_code == 401 and alert(refused) == BAD_CREDENTIALS


def test_repeated_failures_lock_the_account(app, world):
    nurse = world.user(r.NURSE, "A")
    limit = app.config["ACCOUNT_LOCKOUT_FAILURES"]
    for _ in range(limit):
        assert password_step(app.test_client(), nurse.username, "guess").status_code == 401
    client = app.test_client()
    locked = password_step(client, nurse.username, PASSWORD)
    assert locked.status_code == 401
    assert "paused" in alert(locked)
    assert client.get("/login/code").headers["Location"] == "/login"  # no code step offered
    # When the pause is over the right password works again.
    nurse = fresh(nurse)
    nurse.locked_until = utcnow() - timedelta(seconds=1)
    db.session.commit()
    assert sign_in(app.test_client(), nurse).status_code == 302


def test_wrong_codes_count_towards_the_lockout(app, world):
    nurse = world.user(r.NURSE, "A")
    client = app.test_client()
    password_step(client, nurse.username)
    wrong = "000000" if next_code(nurse) != "000000" else "111111"
    for _ in range(app.config["ACCOUNT_LOCKOUT_FAILURES"]):
        client.post("/login/code", data={"code": wrong})
    right = client.post("/login/code", data={"code": next_code(nurse)})
    assert right.headers["Location"] == "/login" and not signed_in(client)


# --- Sessions ---------------------------------------------------------------------------------

def test_logout_ends_the_session_on_the_server(app, world):
    nurse = world.user(r.NURSE, "A")
    client = app.test_client()
    sign_in(client, nurse)
    old_cookie = client.get_cookie("session").value
    out = client.post("/logout")
    assert out.headers["Location"] == "/login" and not signed_in(client)
    # The cookie from before signing out, replayed by someone who copied it, is refused.
    thief = app.test_client()
    thief.set_cookie("session", old_cookie)
    assert not signed_in(thief)
    [row] = sessions_of(nurse)
    assert row.ended_at is not None and row.end_reason == "logout"


def test_disabling_a_user_ends_their_session_at_once(app, world, client_for):
    nurse = world.user(r.NURSE, "A")
    client = client_for(nurse)
    assert signed_in(client)
    nurse.disabled_at = utcnow()
    db.session.commit()
    assert not signed_in(client)
    assert [s.end_reason for s in sessions_of(nurse)] == ["disabled"]


def test_idle_session_ends(app, world, client_for):
    nurse = world.user(r.NURSE, "A")
    client = client_for(nurse)
    age_sessions(nurse, last_seen_at=app.config["SESSION_IDLE_TIMEOUT"] + timedelta(minutes=1))
    assert not signed_in(client)
    assert [s.end_reason for s in sessions_of(nurse)] == ["idle"]


def test_session_ends_at_the_absolute_timeout_even_when_busy(app, world, client_for):
    nurse = world.user(r.NURSE, "A")
    client = client_for(nurse)
    age_sessions(nurse, created_at=app.config["SESSION_ABSOLUTE_TIMEOUT"] + timedelta(minutes=1),
                 last_seen_at=timedelta(seconds=5))
    assert not signed_in(client)
    assert [s.end_reason for s in sessions_of(nurse)] == ["absolute"]


def test_activity_keeps_a_session_alive(app, world, client_for):
    nurse = world.user(r.NURSE, "A")
    client = client_for(nurse)
    age_sessions(nurse, last_seen_at=app.config["SESSION_IDLE_TIMEOUT"] - timedelta(minutes=1))
    assert signed_in(client)
    [row] = sessions_of(nurse)
    assert utcnow() - row.last_seen_at < timedelta(minutes=1)  # seen again just now
    age_sessions(nurse, last_seen_at=app.config["SESSION_IDLE_TIMEOUT"] - timedelta(minutes=1))
    assert signed_in(client)


def test_form_sent_after_a_minute_of_typing_is_saved(app, world, client_for, register):
    """A nurse opens the note form, types for two minutes, then saves."""
    pid = register(world.actor(r.REGISTRATION_CLERK))
    nurse = world.user(r.NURSE, "A")
    client = client_for(nurse)
    assert client.get(f"/patients/{pid}/notes").status_code == 200
    age_sessions(nurse, last_seen_at=timedelta(minutes=2))
    saved = answer(client.post, f"/patients/{pid}/notes", data={"text": "Feeling better."})
    assert saved.status_code == 303, saved.status_code
    assert count(Note) == 1


def test_form_sent_after_the_idle_timeout_asks_to_sign_in_and_writes_nothing(
        app, world, client_for, register):
    pid = register(world.actor(r.REGISTRATION_CLERK))
    nurse = world.user(r.NURSE, "A")
    client = client_for(nurse)
    age_sessions(nurse, last_seen_at=app.config["SESSION_IDLE_TIMEOUT"] + timedelta(minutes=1))
    late = answer(client.post, f"/patients/{pid}/notes", data={"text": "Too late."})
    assert late.status_code == 302, late.status_code
    assert urlsplit(late.headers["Location"]).path == "/login"
    assert count(Note) == 0


def test_each_sign_in_gets_a_new_session_token(app, world):
    nurse = world.user(r.NURSE, "A")
    client = app.test_client()
    tokens_seen = []
    for _ in range(2):
        sign_in(client, nurse)
        with client.session_transaction() as sess:
            tokens_seen.append(sess["sid"])
    assert tokens_seen[0] != tokens_seen[1]
    stored = {s.token_hash for s in sessions_of(nurse)}
    assert stored == {hashlib.sha256(t.encode()).hexdigest() for t in tokens_seen}
    assert not set(tokens_seen) & stored  # only hashes are kept


# --- First sign-in: setting up the code app ------------------------------------------------------

def test_first_sign_in_sets_up_a_code_app(app, world):
    lab = world.user(r.LAB, "A")
    lab.totp_secret = None
    db.session.commit()
    client = app.test_client()
    first = password_step(client, lab.username)
    assert first.headers["Location"] == "/login/setup"
    page = client.get("/login/setup")
    assert page.status_code == 200
    secret = re.search(r'<code class="secret">([A-Z2-7]+)</code>', page.get_data(as_text=True))[1]
    wrong = client.post("/login/setup", data={"code": "000000" if pyotp.TOTP(secret).now()
                                                       != "000000" else "111111"})
    assert wrong.status_code == 401 and not signed_in(client)
    done = client.post("/login/setup", data={"code": pyotp.TOTP(secret).now()})
    assert done.status_code == 302 and signed_in(client)
    assert fresh(lab).totp_secret == secret
    # From now on the code step is asked for, not the setup.
    assert password_step(app.test_client(), lab.username).headers["Location"] == "/login/code"


def test_setup_page_is_not_offered_to_an_account_that_has_a_code_app(app, world):
    nurse = world.user(r.NURSE, "A")
    client = app.test_client()
    password_step(client, nurse.username)
    assert client.get("/login/setup").headers["Location"] == "/login/code"
    assert client.post("/login/setup", data={"code": "123456"}).headers["Location"] == "/login"
    assert fresh(nurse).totp_secret == nurse.totp_secret


# --- CSRF -----------------------------------------------------------------------------------

def page_token(html: str) -> str:
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', html)[1]


def form_token(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html)[1]


REGISTRATION = {"given_name": "Amina", "family_name": "Odhiambo", "sex": "female",
                "birth_date": "1990-03-04", "confirm_new": "yes"}


@config(WTF_CSRF_ENABLED=True)
def test_post_without_csrf_token_is_refused_and_writes_nothing(app, world, client_for):
    client = client_for(world.user(r.REGISTRATION_CLERK, "A"))
    client.get("/patients/new")
    refused = client.post("/patients/new", data=REGISTRATION)
    assert refused.status_code == 400
    forged = client.post("/patients/new", data={**REGISTRATION, "csrf_token": "forged"})
    assert forged.status_code == 400
    assert count(Patient) == 0


@config(WTF_CSRF_ENABLED=True)
def test_post_with_the_pages_csrf_token_works(app, world, client_for):
    client = client_for(world.user(r.REGISTRATION_CLERK, "A"))
    html = client.get("/patients/new").get_data(as_text=True)
    assert form_token(html) == page_token(html)
    saved = client.post("/patients/new", data={**REGISTRATION, "csrf_token": form_token(html)})
    assert saved.status_code == 303
    assert count(Patient) == 1


@config(WTF_CSRF_ENABLED=True)
def test_htmx_request_sends_the_csrf_token_in_a_header(app, world, client_for):
    client = client_for(world.user(r.REGISTRATION_CLERK, "A"))
    token = page_token(client.get("/patients").get_data(as_text=True))
    headers = {"HX-Request": "true"}
    assert client.post("/patients/new", data=REGISTRATION, headers=headers).status_code == 400
    saved = client.post("/patients/new", data=REGISTRATION,
                        headers={**headers, "X-CSRFToken": token})
    assert saved.status_code == 303
    assert count(Patient) == 1


@config(WTF_CSRF_ENABLED=True)
def test_sign_in_form_needs_its_csrf_token(app, world):
    nurse = world.user(r.NURSE, "A")
    client = app.test_client()
    assert password_step(client, nurse.username).status_code == 400
    token = form_token(client.get("/login").get_data(as_text=True))
    accepted = client.post("/login", data={"username": nurse.username, "password": PASSWORD,
                                           "csrf_token": token})
    assert accepted.headers["Location"] == "/login/code"


# --- Rate limit -------------------------------------------------------------------------------

@config(RATELIMIT_ENABLED=True, SIGN_IN_RATE_LIMIT="3 per minute")
def test_sign_in_attempts_from_one_address_are_rate_limited(app, world):
    nurse = world.user(r.NURSE, "A")
    attacker = app.test_client()
    for _ in range(3):
        assert password_step(attacker, nurse.username, "guess").status_code == 401
    blocked = password_step(attacker, nurse.username, PASSWORD)
    assert blocked.status_code == 429
    assert "Too many attempts" in blocked.get_data(as_text=True)
    # Someone at another address is not held up by it.
    colleague = app.test_client()
    colleague.environ_base["REMOTE_ADDR"] = "10.1.2.3"
    assert password_step(colleague, nurse.username).headers["Location"] == "/login/code"


# --- API tokens -------------------------------------------------------------------------------

def test_tokens_create_prints_a_token_and_stores_only_its_hash(app, world):
    pharmacist = world.user(r.PHARMACIST, "A")
    result = app.test_cli_runner().invoke(args=["tokens", "create", pharmacist.username])
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.startswith("crt_") and len(token) > 30
    db.session.rollback()
    [row] = db.session.execute(select(ApiToken)).scalars().all()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    stored = " ".join(str(getattr(row, c.key)) for c in ApiToken.__table__.columns)
    assert token not in stored and token[4:] not in stored

    found = tokens.authenticate(token)
    assert found is not None and found.user_id == pharmacist.id
    assert found.memberships == {world.clinics["A"].id: frozenset({r.PHARMACIST})}
    assert tokens.authenticate(token[:-1] + ("a" if token[-1] != "a" else "b")) is None
    assert tokens.authenticate("crt_" + "x" * 43) is None
    assert tokens.authenticate(token[4:]) is None

    pharmacist = fresh(pharmacist)
    pharmacist.disabled_at = utcnow()
    db.session.commit()
    assert tokens.authenticate(token) is None


def test_tokens_create_refuses_unknown_and_disabled_users(app, world):
    runner = app.test_cli_runner()
    unknown = runner.invoke(args=["tokens", "create", "nobody.here"])
    assert unknown.exit_code != 0 and "No active user" in unknown.output
    nurse = world.user(r.NURSE, "A")
    nurse.disabled_at = utcnow()
    db.session.commit()
    disabled = runner.invoke(args=["tokens", "create", nurse.username])
    assert disabled.exit_code != 0
    assert count(ApiToken) == 0


def test_a_request_under_way_does_not_wipe_the_message_a_saved_form_left(
        app, world, client_for, register):
    """The tablet's worker sends its own requests while a person saves a form: one sent with
    the cookie from before the save, answered after it, must not put that cookie back."""
    pid = register(world.actor(r.REGISTRATION_CLERK))
    nurse = client_for(world.user(r.NURSE, "A"))
    with nurse.session_transaction() as kept:
        kept.permanent = True  # as a sign-in makes it (sessions.start)
    name = app.config["SESSION_COOKIE_NAME"]
    assert nurse.get(f"/patients/{pid}/notes").status_code == 200  # the form, as opened
    before_save = nurse.get_cookie(name).value
    saved = answer(nurse.post, f"/patients/{pid}/notes", data={"text": "Feeling better."})
    assert saved.status_code == 303, saved.status_code

    under_way = app.test_client()
    under_way.set_cookie(name, before_save)
    late = under_way.get("/app/session.json", headers={"Accept": "application/json"})
    assert late.status_code == 200
    for header in late.headers.getlist("Set-Cookie"):  # the browser keeps the last one set
        if header.startswith(f"{name}="):
            nurse.set_cookie(name, header.split(";", 1)[0].split("=", 1)[1])

    chart = nurse.get(saved.headers["Location"])
    assert "Note saved as a draft." in chart.get_data(as_text=True)
