"""Pull cursors: opaque to clients, and everything the server needs to go on where it stopped."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from app.domain.ids import is_uuid

# 1: backfill [entity index, last id], in id order; 2: [entity index, last patient id, last id].
VERSION = 2


@dataclass
class Cursor:
    epoch: str
    scope: str
    # Position in the change log: every change at or before (txid, seq) has been delivered.
    txid: int
    seq: int
    # Subset generation the device holds, and where a backfill of that generation's new
    # patients stands (entity index, last patient id, last record id: records go out in
    # (patient_id, id) order), or None when there is none running.
    gen: int
    backfill: tuple[int, str, str] | None = None

    def encode(self) -> str:
        body = [VERSION, self.epoch, self.scope, self.txid, self.seq, self.gen,
                list(self.backfill) if self.backfill else None]
        raw = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        """None for a missing or unreadable cursor: the device then gets a fresh start."""
        if not text:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            version, epoch, scope, txid, seq, gen, backfill = json.loads(raw)
        except (ValueError, TypeError, binascii.Error, RecursionError):
            return None
        # Signed cursors are checked before this; still, nothing read here may reach a query
        # with a number no BIGINT column holds, or text (a NUL) no database takes.
        if version not in (1, VERSION) or not all(_column_int(v) for v in (txid, seq, gen)):
            return None
        if not isinstance(epoch, str) or not isinstance(scope, str):
            return None
        if backfill is not None:
            if not (isinstance(backfill, list) and len(backfill) == (2 if version == 1 else 3)
                    and _column_int(backfill[0])
                    and all(isinstance(k, str) and (k == "" or is_uuid(k)) for k in backfill[1:])):
                return None
            # A version 1 position (an id, in id order) says nothing about (patient_id, id)
            # order: that entity starts over. The device gets some records again, none missed.
            backfill = (backfill[0], "", "") if version == 1 else tuple(backfill)
        return cls(epoch, scope, txid, seq, gen, backfill)


def _column_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def seal(cursor: Cursor, key: bytes) -> str:
    """The cursor as the device sees it, signed so an edited one is refused.

    An edited cursor could otherwise restart a backfill of patients the device was told to
    evict. The key includes the client id: a cursor is only good for the device it was
    given to.
    """
    body = cursor.encode()
    return f"{body}.{_mac(body, key)}"


def unseal(text: str | None, key: bytes) -> Cursor | None:
    body, _, mac = (text or "").rpartition(".")
    if not body or not hmac.compare_digest(mac, _mac(body, key)):
        return None
    return Cursor.decode(body)


def _mac(body: str, key: bytes) -> str:
    digest = hmac.new(key, body.encode(), hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode()
