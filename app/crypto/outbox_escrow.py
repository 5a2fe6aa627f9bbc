"""Queued mutations escrowed: sealed on the device to the server's public key (DESIGN.md §6).

A device encrypts each mutation a person makes twice: under that person's data key (so the
device can show and send it) and to this server (so it still reaches the server if the
person forgets their secret or too many wrong guesses wipe the key slots). The second is
ECDH on P-256 with a fresh key pair on the device, HKDF-SHA256 and AES-GCM: only the
holder of the private key here can open it, and the device forgets its half at once.

The associated data names the author and the mutation, so an envelope opens only for the
person who made it and only as the mutation it claims to be.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.crypto.configured import from_config

CURVE = ec.SECP256R1()
HKDF_INFO = b"clinic-record outbox escrow v1"
IV_BYTES = 12


class EscrowKeyError(ValueError):
    """A configured outbox escrow key is unusable."""


class EnvelopeError(ValueError):
    """An envelope is malformed, for another key, or not this person's."""


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _b64text(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def load_private_key(text: str, what: str = "OUTBOX_ESCROW_KEY") -> ec.EllipticCurvePrivateKey:
    """PEM, or base64 of the 32-byte private scalar."""
    text = text.strip()
    if "-----BEGIN" in text:
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != CURVE.name:
            raise EscrowKeyError(f"{what} is not a P-256 key.")
        return key
    try:
        raw = _b64(text)
    except (binascii.Error, ValueError) as exc:
        raise EscrowKeyError(f"{what} is neither PEM nor base64.") from exc
    if len(raw) != 32:
        raise EscrowKeyError(f"{what} must be 32 bytes in base64, not {len(raw)}.")
    try:
        return ec.derive_private_key(int.from_bytes(raw, "big"), CURVE)
    except ValueError as exc:
        raise EscrowKeyError(f"{what} is not a valid P-256 private key.") from exc


def public_raw(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint)


def key_id(key: ec.EllipticCurvePrivateKey) -> str:
    return hashlib.sha256(public_raw(key)).hexdigest()[:16]


def associated_data(author_id: str, mid: str) -> bytes:
    return f"outbox-escrow\x00{author_id}\x00{mid}".encode()


@dataclass(frozen=True)
class EscrowKeys:
    """The key devices seal to now, and older ones whose envelopes may still be queued."""

    current: ec.EllipticCurvePrivateKey
    older: tuple[ec.EllipticCurvePrivateKey, ...] = ()

    def public_jwk(self) -> dict:
        """What a device imports with WebCrypto, plus the id it echoes back in envelopes."""
        numbers = self.current.public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": _b64text(numbers.x.to_bytes(32, "big")),
                "y": _b64text(numbers.y.to_bytes(32, "big")), "kid": key_id(self.current)}

    def _by_id(self, kid: str) -> ec.EllipticCurvePrivateKey:
        for key in (self.current, *self.older):
            if key_id(key) == kid:
                return key
        raise EnvelopeError("sealed to a key this server no longer holds")

    def open(self, envelope: dict, author_id: str, mid: str) -> dict:
        """The mutation's {data, base} from `envelope` ({kid, epk, iv, ct}, base64url)."""
        try:
            kid, epk, iv, ct = (envelope[k] for k in ("kid", "epk", "iv", "ct"))
            epk_bytes, iv_bytes, sealed = _b64(epk), _b64(iv), _b64(ct)
            device_half = ec.EllipticCurvePublicKey.from_encoded_point(CURVE, epk_bytes)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise EnvelopeError("not a sealed mutation") from exc
        if len(iv_bytes) != IV_BYTES:
            raise EnvelopeError("not a sealed mutation")
        shared = self._by_id(str(kid)).exchange(ec.ECDH(), device_half)
        aes = HKDF(algorithm=hashes.SHA256(), length=32, salt=epk_bytes, info=HKDF_INFO).derive(shared)
        try:
            plain = AESGCM(aes).decrypt(iv_bytes, sealed, associated_data(author_id, mid))
        except InvalidTag as exc:
            raise EnvelopeError("does not open for this person and mutation") from exc
        said = json.loads(plain)
        if not isinstance(said, dict) or not isinstance(said.get("data"), dict):
            raise EnvelopeError("not a sealed mutation")
        return said


def escrow_keys(current: str, older: str = "") -> EscrowKeys:
    """OUTBOX_ESCROW_KEY and the comma-separated OUTBOX_ESCROW_OLD_KEYS (base64 only)."""
    return EscrowKeys(load_private_key(current), tuple(
        load_private_key(part, "OUTBOX_ESCROW_OLD_KEYS entry") for part in older.split(",") if part.strip()))


def current_escrow_keys() -> EscrowKeys:
    return from_config("outbox_escrow", ("OUTBOX_ESCROW_KEY", "OUTBOX_ESCROW_OLD_KEYS"), escrow_keys)
