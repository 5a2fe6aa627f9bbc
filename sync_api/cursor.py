"""Pull cursors: opaque to clients, and everything the server needs to go on where it stopped."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass

from app.domain.ids import is_uuid

# 1: backfill [entity index, last id], in id order; 2: [entity index, last patient id, last id];
# 3: and where the subset was last known to hold (subset_checked).
VERSION = 3


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
    # (txid, seq, minute): the log position up to which nothing that could change the
    # device's subset has been written since it was last worked out, and the minute (since
    # the Unix epoch) it was last worked out in full. None: work it out at the next pull.
    subset_checked: tuple[int, int, int] | None = None

    def encode(self) -> str:
        body = [VERSION, self.epoch, self.scope, self.txid, self.seq, self.gen,
                list(self.backfill) if self.backfill else None,
                list(self.subset_checked) if self.subset_checked else None]
        raw = json.dumps(body, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str | None) -> Cursor | None:
        """None for a missing or unreadable cursor: the device then gets a fresh start."""
        if not text:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            body = json.loads(raw)
            version = body[0]
            # Before version 3 there was no subset_checked: the next pull works it out.
            version, epoch, scope, txid, seq, gen, backfill, checked = (
                body if version == VERSION else [*body, None])
        except (ValueError, TypeError, KeyError, IndexError, binascii.Error, RecursionError):
            return None
        # Signed cursors are checked before this; still, nothing read here may reach a query
        # with a number no BIGINT column holds, or text (a NUL) no database takes.
        if version not in (1, 2, VERSION) or not all(_column_int(v) for v in (txid, seq, gen)):
            return None
        if checked is not None and not (isinstance(checked, list) and len(checked) == 3
                                        and all(_column_int(v) for v in checked)):
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
        return cls(epoch, scope, txid, seq, gen, backfill,
                   tuple(checked) if checked is not None else None)


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
