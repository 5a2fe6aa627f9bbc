"""Changes a device escrows to the server (static/idb/escrow.js) open here, and only for
their author and as the change they claim to be (app/crypto/outbox_escrow.py)."""
from __future__ import annotations

import base64

import pytest

from app.crypto.outbox_escrow import EnvelopeError, EscrowKeys, key_id, load_private_key
from tests.js_bridge import call_js

AUTHOR = "0190b6f2-1c3a-7a00-8f00-0000000000a1"
OTHER = "0190b6f2-1c3a-7a00-8f00-0000000000b2"
MID = "0190b6f2-1c3a-7a00-8f00-0000000000c3"
SAID = {"data": {"given_name": "Amina", "family_name": "Qxcanary", "national_id": "CNRY123"},
        "base": {"phone": None}}


def _key(seed: int):
    return load_private_key(base64.b64encode(bytes([seed]) * 32).decode())


@pytest.fixture(scope="module")
def keys():
    return EscrowKeys(_key(7), older=(_key(8),))


def _seal(server_key: dict, author=AUTHOR, mid=MID, said=SAID, times=1) -> list[dict]:
    return call_js("static/idb/escrow.js", [("sealOnce", [server_key, author, mid, said])] * times)


def test_a_device_envelope_opens_on_the_server_for_its_author(keys):
    [envelope] = _seal(keys.public_jwk())
    assert "Qxcanary" not in str(envelope)
    assert keys.open(envelope, AUTHOR, MID) == SAID


def test_each_envelope_has_a_fresh_device_key_and_iv(keys):
    first, second = _seal(keys.public_jwk(), times=2)
    assert first["epk"] != second["epk"] and first["ct"] != second["ct"]


@pytest.mark.parametrize("author, mid", [(OTHER, MID), (AUTHOR, OTHER)],
                         ids=["another person", "another change"])
def test_an_envelope_does_not_open_for_anyone_or_anything_else(keys, author, mid):
    [envelope] = _seal(keys.public_jwk())
    with pytest.raises(EnvelopeError):
        keys.open(envelope, author, mid)


def test_a_tampered_envelope_is_refused(keys):
    [envelope] = _seal(keys.public_jwk())
    ct = bytearray(base64.urlsafe_b64decode(envelope["ct"] + "=="))
    ct[3] ^= 1
    tampered = {**envelope, "ct": base64.urlsafe_b64encode(bytes(ct)).decode().rstrip("=")}
    with pytest.raises(EnvelopeError):
        keys.open(tampered, AUTHOR, MID)
    with pytest.raises(EnvelopeError):
        keys.open({"kid": envelope["kid"], "epk": "not base64!"}, AUTHOR, MID)


def test_envelopes_sealed_to_an_older_key_still_open_after_rotation(keys):
    before = EscrowKeys(_key(8))
    [envelope] = _seal(before.public_jwk())
    assert envelope["kid"] == key_id(_key(8))
    assert keys.open(envelope, AUTHOR, MID) == SAID
    with pytest.raises(EnvelopeError, match="no longer holds"):
        EscrowKeys(_key(9)).open(envelope, AUTHOR, MID)
