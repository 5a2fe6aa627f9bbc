"""Passkeys: adding, signing in, removing; the checks that refuse a bad answer; rate limits on
passkeys and on administrators' resets.

The authenticator is a software one built here (EC P-256, attestation "none"), so every byte
the server checks is under the test's control.
"""
from __future__ import annotations

import hashlib
import json
import secrets
from datetime import timedelta

import cbor2
import pyotp
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select

from app.domain import roles as r
from app.extensions import db
from app.models import ApiToken, AuditEvent, PasskeyCredential, User, UserSession
from app.services import tokens
from app.services.passkeys import prf_salt
from app.web import sessions
from tests.conftest import config
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url

RP_ID, ORIGIN = "localhost", "http://localhost"
UP, UV, AT = 0x01, 0x04, 0x40

pytestmark = pytest.mark.postgres


@pytest.fixture
def app_overrides(request):
    return {"PROPAGATE_EXCEPTIONS": False, "WEBAUTHN_RP_ID": RP_ID, "WEBAUTHN_ORIGIN": ORIGIN,
            **getattr(request, "param", {})}



class SoftAuthenticator:
    """One passkey on a pretend device: makes attestations and signs assertions by hand."""

    def __init__(self, user_id: str, origin: str = ORIGIN):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = secrets.token_bytes(32)
        self.user_id, self.origin = user_id, origin
        self.counter = 0

    @property
    def id(self) -> str:
        return bytes_to_base64url(self.credential_id)

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": origin or self.origin,
                           "crossOrigin": False}).encode()

    def _auth_data(self, flags: int, counter: int, attested: bytes = b"") -> bytes:
        return (hashlib.sha256(RP_ID.encode()).digest() + bytes([flags])
                + counter.to_bytes(4, "big") + attested)

    def attest(self, challenge: str, uv: bool = True, origin: str | None = None) -> dict:
        numbers = self.key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})
        attested = (bytes(16) + len(self.credential_id).to_bytes(2, "big")
                    + self.credential_id + cose)
        auth_data = self._auth_data(UP | AT | (UV if uv else 0), self.counter, attested)
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {"id": self.id, "rawId": self.id, "type": "public-key",
                "clientExtensionResults": {},
                "response": {
                    "clientDataJSON": bytes_to_base64url(
                        self._client_data("webauthn.create", challenge, origin)),
                    "attestationObject": bytes_to_base64url(attestation),
                    "transports": ["internal"]}}

    def assertion(self, challenge: str, uv: bool = True, origin: str | None = None,
                  counter: int | None = None) -> dict:
        if counter is None:
            self.counter += 1
            counter = self.counter
        auth_data = self._auth_data(UP | (UV if uv else 0), counter)
        client_data = self._client_data("webauthn.get", challenge, origin)
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                  ec.ECDSA(hashes.SHA256()))
        return {"id": self.id, "rawId": self.id, "type": "public-key",
                "clientExtensionResults": {},
                "response": {"clientDataJSON": bytes_to_base64url(client_data),
                             "authenticatorData": bytes_to_base64url(auth_data),
                             "signature": bytes_to_base64url(signature),
                             "userHandle": bytes_to_base64url(self.user_id.encode())}}


# --- Helpers --------------------------------------------------------------------------------

def events(action: str, outcome: str | None = None) -> list[AuditEvent]:
    query = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
    if outcome:
        query = query.where(AuditEvent.outcome == outcome)
    found = list(db.session.execute(query).scalars())
    for event in found:
        db.session.expunge(event)
    db.session.rollback()  # release SQLite's audit lock for the next request
    return found


def stored_passkeys(user: User) -> list[PasskeyCredential]:
    db.session.rollback()
    db.session.expire_all()
    found = list(db.session.execute(select(PasskeyCredential).where(
        PasskeyCredential.user_id == user.id)).scalars())
    db.session.rollback()
    return found


def add_passkey(client, authenticator: SoftAuthenticator, name: str = "Triage tablet",
                **attest):
    options = client.post("/account/passkeys/options", json={"name": name})
    assert options.status_code == 200, options.get_data(as_text=True)
    challenge = options.get_json()["publicKey"]["challenge"]
    return client.post("/account/passkeys",
                       json={"credential": authenticator.attest(challenge, **attest)})


def passkey_sign_in(client, authenticator: SoftAuthenticator, username: str = "", **assertion):
    options = client.post("/login/passkey/options", json={"username": username, "next": "/"})
    assert options.status_code == 200, options.get_data(as_text=True)
    challenge = options.get_json()["publicKey"]["challenge"]
    return client.post("/login/passkey",
                       json={"credential": authenticator.assertion(challenge, **assertion)})


def signed_in(client) -> bool:
    return client.get("/account").status_code == 200


@pytest.fixture
def nurse_with_passkey(world, client_for):
    nurse = world.user(r.NURSE, "A")
    authenticator = SoftAuthenticator(nurse.id)
    assert add_passkey(client_for(nurse), authenticator).get_json()["ok"] is True
    return nurse, authenticator


# --- Adding ---------------------------------------------------------------------------------

def test_a_person_adds_a_passkey_and_sees_it_on_their_account_page(world, client_for):
    nurse = world.user(r.NURSE, "A")
    client = client_for(nurse)
    authenticator = SoftAuthenticator(nurse.id)
    answer = add_passkey(client, authenticator, name="Triage tablet")
    assert answer.status_code == 200
    assert answer.get_json()["credential_id"] == authenticator.id
    [stored] = stored_passkeys(nurse)
    assert stored.credential_id == authenticator.id and stored.name == "Triage tablet"
    page = client.get("/account").get_data(as_text=True)
    assert "Triage tablet" in page and "not used yet" in page
    assert events("account.passkey.add", "success")


def test_options_ask_for_user_verification_a_discoverable_key_and_give_the_prf_salt(
        app, world, client_for):
    nurse = world.user(r.NURSE, "A")
    options = client_for(nurse).post("/account/passkeys/options", json={}).get_json()
    selection = options["publicKey"]["authenticatorSelection"]
    assert selection["userVerification"] == "required"
    assert selection["residentKey"] == "required"
    assert base64url_to_bytes(options["prf_salt"]) == hashlib.sha256(
        b"clinic-record device key" + nurse.id.encode()).digest()
    # Signing in with the username typed asks for the same salt, so the device key matches.
    sign_in = app.test_client().post("/login/passkey/options",
                                     json={"username": nurse.username}).get_json()
    assert sign_in["publicKey"]["userVerification"] == "required"
    assert base64url_to_bytes(sign_in["prf_salt"]) == prf_salt(nurse.id)


def test_a_passkey_made_without_user_verification_is_refused(world, client_for):
    nurse = world.user(r.NURSE, "A")
    answer = add_passkey(client_for(nurse), SoftAuthenticator(nurse.id), uv=False)
    assert answer.status_code == 400
    assert "did not confirm that it is you" in answer.get_json()["message"]
    assert stored_passkeys(nurse) == []


# --- Signing in -----------------------------------------------------------------------------

def test_signing_in_with_a_passkey_starts_a_session_and_is_audited(app, nurse_with_passkey):
    nurse, authenticator = nurse_with_passkey
    client = app.test_client()
    answer = passkey_sign_in(client, authenticator)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body == {"ok": True, "redirect": "/", "user_id": nurse.id,
                    "credential_id": authenticator.id}
    assert signed_in(client)
    [stored] = stored_passkeys(nurse)
    assert stored.sign_count == 1 and stored.last_used_at is not None
    success = events("sign_in", "success")[-1]
    assert success.user_id == nurse.id and success.detail["method"] == "passkey"


def test_a_passkey_answer_without_user_verification_signs_no_one_in(app, nurse_with_passkey):
    nurse, authenticator = nurse_with_passkey
    client = app.test_client()
    answer = passkey_sign_in(client, authenticator, uv=False)
    assert answer.status_code == 400
    assert "did not confirm that it is you" in answer.get_json()["message"]
    assert not signed_in(client)
    denied = events("sign_in", "denied")[-1]
    assert denied.user_id == nurse.id and denied.detail["reason"] == "user_not_verified"


def test_a_passkey_answer_made_for_another_site_is_refused(app, nurse_with_passkey):
    _nurse, authenticator = nurse_with_passkey
    client = app.test_client()
    answer = passkey_sign_in(client, authenticator, origin="https://clinic-record.example")
    assert answer.status_code == 400
    assert not signed_in(client)
    assert events("sign_in", "denied")[-1].detail["reason"] == "invalid"


def test_a_replayed_passkey_answer_is_refused(app, nurse_with_passkey):
    _nurse, authenticator = nurse_with_passkey
    first = app.test_client()
    options = first.post("/login/passkey/options", json={}).get_json()
    cookie = first.get_cookie("session").value  # what an eavesdropper could have copied
    # A counter that stays at 0 (allowed for authenticators without one) leaves only the
    # challenge to stop the replay.
    answer = {"credential": authenticator.assertion(options["publicKey"]["challenge"],
                                                    counter=0)}
    assert first.post("/login/passkey", json=answer).status_code == 200
    replay = app.test_client()
    replay.set_cookie("session", cookie)
    refused = replay.post("/login/passkey", json=answer)
    assert refused.status_code == 400
    assert "expired or was already used" in refused.get_json()["message"]
    assert not signed_in(replay)


def test_a_sign_count_going_backwards_is_refused_as_a_possible_copy(app, nurse_with_passkey):
    _nurse, authenticator = nurse_with_passkey
    assert passkey_sign_in(app.test_client(), authenticator, counter=10).status_code == 200
    client = app.test_client()
    answer = passkey_sign_in(client, authenticator, counter=7)
    assert answer.status_code == 400
    assert "copied" in answer.get_json()["message"]
    assert not signed_in(client)
    assert events("sign_in", "denied")[-1].detail["reason"] == "sign_count"


def test_a_passkey_of_another_account_than_the_typed_username_is_refused(
        app, world, nurse_with_passkey):
    _nurse, authenticator = nurse_with_passkey
    client = app.test_client()
    clerk = world.user(r.REGISTRATION_CLERK, "A")
    answer = passkey_sign_in(client, authenticator, username=clerk.username)
    assert answer.status_code == 400
    assert not signed_in(client)


def test_a_disabled_account_cannot_sign_in_with_its_passkey(app, nurse_with_passkey):
    nurse, authenticator = nurse_with_passkey
    db.session.get(User, nurse.id).disabled_at = sessions.utcnow()
    db.session.commit()
    client = app.test_client()
    assert passkey_sign_in(client, authenticator).status_code == 400
    assert not signed_in(client)


# --- Removing -------------------------------------------------------------------------------

def test_removing_a_passkey_stops_it_signing_in(app, client_for, nurse_with_passkey):
    nurse, authenticator = nurse_with_passkey
    [stored] = stored_passkeys(nurse)
    client = client_for(nurse)
    removed = client.post("/account/passkeys/remove", data={"passkey_id": stored.id})
    assert removed.status_code == 303
    assert stored_passkeys(nurse) == []
    assert "You have no passkeys yet." in client.get("/account").get_data(as_text=True)
    stranger = app.test_client()
    answer = passkey_sign_in(stranger, authenticator)
    assert answer.status_code == 400 and not signed_in(stranger)


def _age_sessions(user: User, minutes: int) -> None:
    for row in db.session.execute(select(UserSession).where(UserSession.user_id == user.id)
                                  ).scalars():
        row.created_at = sessions.utcnow() - timedelta(minutes=minutes)
    db.session.commit()


def test_removing_a_passkey_long_after_signing_in_needs_a_fresh_code(
        client_for, nurse_with_passkey):
    nurse, _authenticator = nurse_with_passkey
    [stored] = stored_passkeys(nurse)
    client = client_for(nurse)
    _age_sessions(nurse, 60)
    refused = client.post("/account/passkeys/remove", data={"passkey_id": stored.id})
    assert refused.status_code == 422
    assert "needs a recent sign-in" in refused.get_data(as_text=True)
    assert len(stored_passkeys(nurse)) == 1
    code = pyotp.TOTP(nurse.totp_secret).now()
    done = client.post("/account/passkeys/remove", data={"passkey_id": stored.id, "code": code})
    assert done.status_code == 303
    assert stored_passkeys(nurse) == []


def test_a_person_cannot_remove_someone_elses_passkey(world, client_for, nurse_with_passkey):
    nurse, _authenticator = nurse_with_passkey
    [stored] = stored_passkeys(nurse)
    clerk = client_for(world.user(r.REGISTRATION_CLERK, "A"))
    clerk.post("/account/passkeys/remove", data={"passkey_id": stored.id})
    assert len(stored_passkeys(nurse)) == 1


# --- Administrators' resets -----------------------------------------------------------------

def _tokens_live(user: User) -> int:
    db.session.rollback()
    return len(db.session.execute(select(ApiToken).where(
        ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))).scalars().all())


def _syncs_with(app, token: str) -> int:
    return app.test_client().post(
        "/sync/v1/heartbeat", json={"protocol": 1, "client_id": "hub-device-0001"},
        headers={"Authorization": f"Bearer {token}"}).status_code


@pytest.mark.parametrize("path", ["password", "reset-mfa", "reset-passkeys"])
def test_a_reset_ends_sessions_and_revokes_tokens(app, world, client_for, nurse_with_passkey,
                                                  path):
    nurse, _authenticator = nurse_with_passkey
    token = tokens.issue(db.session.get(User, nurse.id), "hub")
    db.session.commit()
    assert _syncs_with(app, token) == 200
    nurse_client = client_for(nurse)
    admin = client_for(world.user(r.CLINIC_ADMIN, "A"))
    assert admin.post(f"/admin/users/{nurse.id}/{path}").status_code == 303
    assert not signed_in(nurse_client)
    assert _tokens_live(nurse) == 0
    assert _syncs_with(app, token) == 401
    # A code-app reset takes passkeys too: they are second factors, and one left in place
    # would let the person skip setting up the new code app.
    if path != "password":
        assert stored_passkeys(nurse) == []
    else:
        assert len(stored_passkeys(nurse)) == 1


@config(RATELIMIT_ENABLED=True, ADMIN_RESET_RATE_LIMIT="2 per minute")
def test_resets_beyond_the_limit_are_refused_calmly_and_change_nothing(world, client_for):
    nurse, clerk = world.user(r.NURSE, "A"), world.user(r.REGISTRATION_CLERK, "A")
    admin = client_for(world.user(r.CLINIC_ADMIN, "A"))
    assert admin.post(f"/admin/users/{nurse.id}/password").status_code == 303
    assert admin.post(f"/admin/users/{nurse.id}/reset-mfa").status_code == 303
    db.session.rollback()
    before = db.session.get(User, clerk.id).password_hash
    blocked = admin.post(f"/admin/users/{clerk.id}/password")
    assert blocked.status_code == 429
    assert "nothing was changed" in blocked.get_data(as_text=True)
    db.session.rollback()
    db.session.expire_all()
    assert db.session.get(User, clerk.id).password_hash == before
    assert admin.post(f"/admin/users/{clerk.id}/reset-passkeys").status_code == 429
    # Another administrator has their own budget.
    other = client_for(world.user(r.ORG_ADMIN, "A"))
    assert other.post(f"/admin/users/{clerk.id}/password").status_code == 303


@config(RATELIMIT_ENABLED=True, PASSKEY_RATE_LIMIT="2 per minute")
def test_passkey_requests_beyond_the_limit_are_refused(app, world, client_for):
    client = app.test_client()
    for _ in range(2):
        assert client.post("/login/passkey/options", json={}).status_code == 200
    assert client.post("/login/passkey/options", json={}).status_code == 429
    nurse = world.user(r.NURSE, "A")
    account = client_for(nurse)
    account.environ_base["REMOTE_ADDR"] = "10.9.8.7"
    for _ in range(2):
        assert account.post("/account/passkeys/options", json={}).status_code == 200
    assert account.post("/account/passkeys/options", json={}).status_code == 429
