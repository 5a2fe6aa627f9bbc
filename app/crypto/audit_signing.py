"""Ed25519 keys for signing audit checkpoints.

A key's id is the start of the SHA-256 of its raw public key, so nobody has to name keys,
and a checkpoint says which public key checks it. Keys are given as PEM or as base64 of the
raw 32 bytes (the private key's seed, or the public key).
"""
from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

RAW = serialization.Encoding.Raw


class AuditKeyError(ValueError):
    """A configured audit key is unusable."""


def _raw(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), altchars=b"-_")
    except (binascii.Error, ValueError) as exc:
        raise AuditKeyError(f"{what} is neither PEM nor base64.") from exc
    if len(raw) != 32:
        raise AuditKeyError(f"{what} must be 32 bytes in base64, not {len(raw)}.")
    return raw


def load_private_key(text: str) -> Ed25519PrivateKey:
    if "-----BEGIN" in text:
        key = serialization.load_pem_private_key(text.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise AuditKeyError("AUDIT_SIGNING_KEY is not an Ed25519 key.")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw(text, "AUDIT_SIGNING_KEY"))


def load_public_keys(text: str) -> list[Ed25519PublicKey]:
    """Comma-separated base64 raw keys, or concatenated PEM blocks."""
    if "-----BEGIN" in text:
        blocks = [b + "-----END PUBLIC KEY-----" for b in text.split("-----END PUBLIC KEY-----")
                  if "-----BEGIN" in b]
        keys = [serialization.load_pem_public_key(b.strip().encode()) for b in blocks]
        if not all(isinstance(k, Ed25519PublicKey) for k in keys):
            raise AuditKeyError("AUDIT_VERIFY_KEYS holds a key that is not Ed25519.")
        return keys  # type: ignore[return-value]
    return [Ed25519PublicKey.from_public_bytes(_raw(part, "AUDIT_VERIFY_KEYS entry"))
            for part in filter(None, (p.strip() for p in text.split(",")))]


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(RAW, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


class CheckpointSigner:
    """Signs with the current key; verifies with it and every older key still configured."""

    def __init__(self, private_key: Ed25519PrivateKey, older: list[Ed25519PublicKey]):
        self._private = private_key
        self.key_id = key_id(private_key.public_key())
        self._public = {key_id(k): k for k in [*older, private_key.public_key()]}

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private.sign(message)).decode()

    def knows(self, kid: str) -> bool:
        return kid in self._public

    def verifies(self, kid: str, message: bytes, signature: str) -> bool:
        try:
            self._public[kid].verify(base64.b64decode(signature), message)
        except (InvalidSignature, binascii.Error, ValueError):
            return False
        return True
