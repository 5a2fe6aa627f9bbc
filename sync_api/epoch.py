"""The server epoch: a new one after a restore from backup makes every device refill."""
from __future__ import annotations

import uuid

from sqlalchemy import update

from app.extensions import db
from app.models import ServerEpoch
from app.models.types import utcnow


def current_epoch() -> str:
    row = db.session.get(ServerEpoch, 1)
    if row is None:
        row = ServerEpoch(id=1, epoch=str(uuid.uuid4()), reason="created")
        db.session.add(row)
        db.session.flush()
    return row.epoch


def start_new_epoch(reason: str) -> str:
    """Called after restoring a backup: cursors issued before it no longer match anything."""
    current_epoch()
    epoch = str(uuid.uuid4())
    db.session.execute(update(ServerEpoch).where(ServerEpoch.id == 1)
                       .values(epoch=epoch, created_at=utcnow(), reason=reason[:200]))
    return epoch
