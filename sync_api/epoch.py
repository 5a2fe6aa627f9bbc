"""The server epoch: a new one after a restore from backup makes every device refill."""
from __future__ import annotations

import uuid

from sqlalchemy import select, update

from app.extensions import db
from app.models import ServerEpoch
from app.models.types import utcnow


# One column, not the ORM object: every pull asks, and loading the object cost several times
# the query.
_CURRENT = select(ServerEpoch.epoch).where(ServerEpoch.id == 1)


def current_epoch() -> str:
    epoch = db.session.execute(_CURRENT).scalar()
    if epoch is None:
        epoch = str(uuid.uuid4())
        db.session.add(ServerEpoch(id=1, epoch=epoch, reason="created"))
        db.session.flush()
    return epoch


def start_new_epoch(reason: str) -> str:
    """Called after restoring a backup: cursors issued before it no longer match anything."""
    current_epoch()
    epoch = str(uuid.uuid4())
    db.session.execute(update(ServerEpoch).where(ServerEpoch.id == 1)
                       .values(epoch=epoch, created_at=utcnow(), reason=reason[:200]))
    return epoch
