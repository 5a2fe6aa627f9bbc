"""Pull cursors: opaque to clients, and everything the server needs to go on where it stopped."""
from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from app.domain.ids import is_uuid


@dataclass
class Cursor:
    epoch: str
    scope: str
    # Position in the change log: every change at or before (txid, seq) has been delivered.
    txid: int
    seq: int
    # Subset generation the device holds, and where a backfill of that generation's new
    # patients stands (entity index, last id), or None when there is none running.
    gen: int
    backfill: tuple[int, str] | None = None

    def encode(self) -> str:
        body = [1, self.epoch, self.scope, self.txid, self.seq, self.gen,
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
        # The cursor is opaque but not signed: an edited one must not reach a query with a
        # number no BIGINT column holds, or text (a NUL) no database takes.
        if version != 1 or not all(_column_int(v) for v in (txid, seq, gen)):
            return None
        if not isinstance(epoch, str) or not isinstance(scope, str):
            return None
        if backfill is not None:
            if not (isinstance(backfill, list) and len(backfill) == 2
                    and _column_int(backfill[0]) and isinstance(backfill[1], str)
                    and (backfill[1] == "" or is_uuid(backfill[1]))):
                return None
            backfill = (backfill[0], backfill[1])
        return cls(epoch, scope, txid, seq, gen, backfill)


def _column_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63
