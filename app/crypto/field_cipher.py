"""AES-GCM for single record fields, each bound to the table, column and row it belongs to.

A sealed value is `enc:v1:<kid>:<base64url(nonce | ciphertext+tag)>`. The key id names
which configured key sealed it, so keys can be rotated while old values still open. The
associated data is the value's place (table, column, row id): a sealed value copied into
another row or column no longer opens, so a database editor cannot move one patient's
diagnosis onto another patient.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import unicodedata
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "enc:v1:"
NONCE_BYTES = 12  # the size AES-GCM is specified for; random per value
KEY_BYTES = 32  # AES-256
KID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_TOKEN = re.compile(r"^enc:v1:([A-Za-z0-9_-]{1,16}):([A-Za-z0-9_-]+)$")


class FieldKeyError(ValueError):
    """The configured keys are unusable."""


class SealedValueError(RuntimeError):
    """A sealed value does not open: wrong place, edited, unknown key, or plaintext where a
    sealed value belongs. Never answered with a guess: the reader must see the failure."""


@dataclass(frozen=True)
class Place:
    table: str
    column: str
    row_id: str

    def associated_data(self) -> bytes:
        return f"{self.table}\x1f{self.column}\x1f{self.row_id}".encode()

    def __str__(self) -> str:
        return f"{self.table}.{self.column} of row {self.row_id}"


def decode_key(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip() + "=" * (-len(text.strip()) % 4), altchars=b"-_",
                               validate=False)
    except (binascii.Error, ValueError) as exc:
        raise FieldKeyError(f"{what} is not base64.") from exc
    if len(raw) != KEY_BYTES:
        raise FieldKeyError(f"{what} must be {KEY_BYTES} random bytes in base64, not {len(raw)}.")
    return raw


def parse_keys(text: str) -> dict[str, bytes]:
    """`kid:base64key,kid2:base64key` in order: the first seals new values."""
    keys: dict[str, bytes] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        kid, sep, encoded = part.partition(":")
        if not sep or not KID_PATTERN.match(kid):
            raise FieldKeyError("FIELD_ENCRYPTION_KEYS entries are 'kid:base64key' with a key id "
                                "of 1-16 letters, digits, '-' or '_'.")
        if kid in keys:
            raise FieldKeyError(f"FIELD_ENCRYPTION_KEYS names key id {kid!r} twice.")
        keys[kid] = decode_key(encoded, f"FIELD_ENCRYPTION_KEYS key {kid!r}")
    if not keys:
        raise FieldKeyError("FIELD_ENCRYPTION_KEYS holds no key.")
    return keys


def key_id_of(value: object) -> str | None:
    """The key id of a sealed value; None for anything else."""
    match = _TOKEN.match(value) if isinstance(value, str) else None
    return match.group(1) if match else None


def normalise_identifier(value: str) -> str:
    """What makes two ways of typing one identifier equal: case, width, spaces, dashes."""
    folded = unicodedata.normalize("NFKC", value).casefold()
    return "".join(c for c in folded if c.isalnum())


class FieldCipher:
    def __init__(self, keys: dict[str, bytes], blind_index_key: bytes):
        if not keys:
            raise FieldKeyError("no field encryption key")
        self.current_kid = next(iter(keys))
        self._aead = {kid: AESGCM(key) for kid, key in keys.items()}
        self._blind_key = blind_index_key
        # Its own key for the stored hashes of mutation payloads, derived from the blind-index
        # key so no further secret needs configuring.
        self.payload_key = hmac.new(blind_index_key, b"mutation payload hash",
                                    hashlib.sha256).digest()

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._aead)

    def seal(self, plaintext: str, place: Place) -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead[self.current_kid].encrypt(nonce, plaintext.encode(),
                                                      place.associated_data())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{PREFIX}{self.current_kid}:{body}"

    def open(self, value: object, place: Place) -> str:
        match = _TOKEN.match(value) if isinstance(value, str) else None
        if match is None:
            raise SealedValueError(f"{place} holds no sealed value where one belongs.")
        kid, body = match.groups()
        aead = self._aead.get(kid)
        if aead is None:
            raise SealedValueError(f"{place} is sealed with key {kid!r}, which is not configured.")
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        try:
            return aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:],
                                place.associated_data()).decode()
        except InvalidTag:
            raise SealedValueError(f"{place} does not open: it was altered, or copied here from "
                                   "another row or column.") from None

    def blind_index(self, value: str) -> str:
        """Equal for equal identifiers, and meaningless without the key: lookups by value
        work, while the database alone cannot confirm a guessed identifier."""
        return hmac.new(self._blind_key, normalise_identifier(value).encode(),
                        hashlib.sha256).hexdigest()
