"""Passkeys (WebAuthn, through py_webauthn): options for the browser, checking its answers,
and the single-use challenges in between.

User verification (fingerprint, face or device PIN) is required on registration and on
sign-in, so a passkey is two factors in one: something held and something known or been.
Nothing here commits or audits: the views do.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from webauthn import (
    generate_authentication_options, generate_registration_options,
    verify_authentication_response, verify_registration_response,
)
from webauthn.helpers import (
    base64url_to_bytes, bytes_to_base64url, generate_challenge, options_to_json,
    parse_attestation_object, parse_authenticator_data,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference, AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor, ResidentKeyRequirement, UserVerificationRequirement,
)

from app.domain.ids import new_id
from app.extensions import db
from app.models import PasskeyCredential, User, WebAuthnChallenge
from app.models.types import utcnow
from app.services.accounts import find_user

RP_NAME = "Clinic record"
CHALLENGE_SECONDS = 300
CEREMONY_TIMEOUT_MS = 120_000
REGISTER, SIGN_IN = "register", "sign_in"
NAME_LIMIT = 100
# The device's encrypted store is unlocked with the passkey's PRF output for this salt, so it
# must stay the same for a person forever: changing it locks every device store.
PRF_LABEL = b"clinic-record device key"
# What a malformed answer from a browser can raise inside py_webauthn besides its own errors
# (bad base64, CBOR, missing keys).
_MALFORMED = (WebAuthnException, ValueError, TypeError, KeyError, IndexError)


@dataclass(frozen=True)
class RelyingParty:
    id: str
    origin: str


class PasskeyRefused(Exception):
    """A passkey answer that is not accepted; `reason` goes to the audit log, `message` to the
    person."""

    def __init__(self, reason: str, message: str, credential: PasskeyCredential | None = None):
        super().__init__(reason)
        self.reason, self.message, self.credential = reason, message, credential


MESSAGES = {
    "challenge": "The passkey request expired or was already used, so nothing was done. "
                 "Try again.",
    "user_not_verified": "Your device did not confirm that it is you (fingerprint, face or "
                         "device PIN), so the passkey was not accepted. Try again and unlock "
                         "your device when it asks, or use your password and code.",
    "unknown_passkey": "This passkey is not registered here, or it was removed. Use your "
                       "password and code instead.",
    "sign_count": "This passkey answered as if it had been copied to another device, so it was "
                  "not accepted. Use your password and code, and tell your administrator.",
    "wrong_user": "This passkey belongs to a different account from the username you typed. "
                  "Clear the username or choose the right passkey.",
    "duplicate": "This passkey is already registered. Nothing was changed.",
    "invalid": "The passkey's answer could not be checked, so it was not accepted. Try again, "
               "or use your password and code.",
}


def _refused(reason: str, credential: PasskeyCredential | None = None) -> PasskeyRefused:
    return PasskeyRefused(reason, MESSAGES[reason], credential)


def prf_salt(user_id: str) -> bytes:
    """The fixed per-person salt for the PRF extension (see PRF_LABEL)."""
    return hashlib.sha256(PRF_LABEL + user_id.encode()).digest()


def prf_salt_for_username(username: str, secret_key: str) -> bytes:
    """The person's salt, or for an unknown username a stable stand-in, so the options do not
    tell whether an account exists."""
    user = find_user(username) if username.strip() else None
    if user is not None:
        return prf_salt(user.id)
    stand_in = hmac.new(secret_key.encode(), username.strip().lower().encode(), "sha256")
    return prf_salt(stand_in.hexdigest())


# --- Challenges -------------------------------------------------------------------------


def _digest(challenge: bytes) -> str:
    return hashlib.sha256(challenge).hexdigest()


def _issue_challenge(purpose: str, user_id: str | None) -> bytes:
    now = utcnow()
    db.session.execute(delete(WebAuthnChallenge).where(WebAuthnChallenge.expires_at < now))
    challenge = generate_challenge()
    db.session.add(WebAuthnChallenge(id=_digest(challenge), purpose=purpose, user_id=user_id,
                                     expires_at=now + timedelta(seconds=CHALLENGE_SECONDS)))
    db.session.flush()
    return challenge


def take_challenge(challenge: bytes, purpose: str, user_id: str | None) -> None:
    """Use the challenge up, or refuse: unknown, expired, used, or issued for something else.

    A DELETE that must find the row: two answers racing for one challenge cannot both win.
    """
    owner = (WebAuthnChallenge.user_id == user_id if user_id
             else WebAuthnChallenge.user_id.is_(None))
    taken = db.session.execute(delete(WebAuthnChallenge).where(
        WebAuthnChallenge.id == _digest(challenge), WebAuthnChallenge.purpose == purpose,
        owner, WebAuthnChallenge.expires_at > utcnow()))
    if taken.rowcount != 1:
        raise _refused("challenge")


# --- Registration -----------------------------------------------------------------------


def passkeys_of(user: User) -> list[PasskeyCredential]:
    return list(db.session.execute(select(PasskeyCredential).where(
        PasskeyCredential.user_id == user.id).order_by(PasskeyCredential.created_at)).scalars())


def registration_options(rp: RelyingParty, user: User) -> tuple[dict, bytes]:
    """(options for the page, challenge to remember)."""
    challenge = _issue_challenge(REGISTER, user.id)
    options = generate_registration_options(
        rp_id=rp.id, rp_name=RP_NAME, user_name=user.username, user_id=user.id.encode(),
        user_display_name=user.display_name, challenge=challenge, timeout=CEREMONY_TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        # Resident (discoverable) keys let a person sign in without typing a username.
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            user_verification=UserVerificationRequirement.REQUIRED),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.credential_id))
                             for p in passkeys_of(user)])
    return {"publicKey": json.loads(options_to_json(options)),
            "prf_salt": bytes_to_base64url(prf_salt(user.id))}, challenge


def register(rp: RelyingParty, user: User, credential: dict, challenge: bytes,
             name: str) -> PasskeyCredential:
    take_challenge(challenge, REGISTER, user.id)
    try:
        verified = verify_registration_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id,
            expected_origin=rp.origin, require_user_verification=True)
    except _MALFORMED as exc:
        raise _refused(_why_registration_failed(credential)) from exc
    credential_id = bytes_to_base64url(verified.credential_id)
    if db.session.execute(select(PasskeyCredential.id).where(
            PasskeyCredential.credential_id == credential_id)).first():
        raise _refused("duplicate")
    passkey = PasskeyCredential(
        id=new_id(), user_id=user.id, credential_id=credential_id,
        public_key=verified.credential_public_key, sign_count=verified.sign_count,
        name=clean_name(name) or default_name(user), aaguid=verified.aaguid,
        backed_up=verified.credential_backed_up)
    db.session.add(passkey)
    db.session.flush()
    return passkey


def clean_name(name: str) -> str:
    return " ".join((name or "").split())[:NAME_LIMIT]


def default_name(user: User) -> str:
    return f"Passkey {len(passkeys_of(user)) + 1}"


def _why_registration_failed(credential: dict) -> str:
    try:
        attestation = base64url_to_bytes(credential["response"]["attestationObject"])
        flags = parse_attestation_object(attestation).auth_data.flags
    except _MALFORMED:
        return "invalid"
    return "invalid" if flags.uv else "user_not_verified"


# --- Signing in -------------------------------------------------------------------------


def sign_in_options(rp: RelyingParty, salt: bytes) -> tuple[dict, bytes]:
    """Options for a username-less sign-in: the authenticator offers its passkeys for this
    site, so nothing here says which accounts exist."""
    challenge = _issue_challenge(SIGN_IN, None)
    options = generate_authentication_options(
        rp_id=rp.id, challenge=challenge, timeout=CEREMONY_TIMEOUT_MS,
        user_verification=UserVerificationRequirement.REQUIRED)
    return {"publicKey": json.loads(options_to_json(options)),
            "prf_salt": bytes_to_base64url(salt)}, challenge


def find_credential(credential: dict) -> PasskeyCredential | None:
    credential_id = credential.get("id") if isinstance(credential, dict) else None
    if not isinstance(credential_id, str) or len(credential_id) > 1400:
        return None
    return db.session.execute(select(PasskeyCredential).where(
        PasskeyCredential.credential_id == credential_id)).scalar_one_or_none()


def authenticate(rp: RelyingParty, credential: dict, challenge: bytes,
                 expected_user: User | None = None) -> PasskeyCredential:
    """The passkey that signed this challenge, its counter and last use updated; or refused.

    `expected_user`: the account whose username was typed, if one was.
    """
    take_challenge(challenge, SIGN_IN, None)
    passkey = find_credential(credential)
    if passkey is None:
        raise _refused("unknown_passkey")
    if expected_user is not None and expected_user.id != passkey.user_id:
        raise _refused("wrong_user", passkey)
    handle = (credential.get("response") or {}).get("userHandle")
    try:
        if handle and base64url_to_bytes(handle) != passkey.user_id.encode():
            raise _refused("invalid", passkey)
        verified = verify_authentication_response(
            credential=credential, expected_challenge=challenge, expected_rp_id=rp.id,
            expected_origin=rp.origin, credential_public_key=passkey.public_key,
            credential_current_sign_count=passkey.sign_count, require_user_verification=True)
    except _MALFORMED as exc:
        raise _refused(_why_assertion_failed(credential, passkey), passkey) from exc
    passkey.sign_count = verified.new_sign_count
    passkey.backed_up = verified.credential_backed_up
    passkey.last_used_at = utcnow()
    return passkey


def _why_assertion_failed(credential: dict, passkey: PasskeyCredential) -> str:
    try:
        data = parse_authenticator_data(
            base64url_to_bytes(credential["response"]["authenticatorData"]))
    except _MALFORMED:
        return "invalid"
    if not data.flags.uv:
        return "user_not_verified"
    # A counter that did not go up means two copies of one key exist (a cloned authenticator).
    if (data.sign_count or passkey.sign_count) and data.sign_count <= passkey.sign_count:
        return "sign_count"
    return "invalid"


# --- Removing ---------------------------------------------------------------------------


def get_own(user: User, passkey_id: str) -> PasskeyCredential | None:
    passkey = db.session.get(PasskeyCredential, passkey_id) if passkey_id else None
    return passkey if passkey is not None and passkey.user_id == user.id else None


def remove(passkey: PasskeyCredential) -> None:
    db.session.delete(passkey)
    db.session.flush()


def remove_all_of(user_id: str) -> int:
    result = db.session.execute(delete(PasskeyCredential).where(
        PasskeyCredential.user_id == user_id))
    return result.rowcount or 0
