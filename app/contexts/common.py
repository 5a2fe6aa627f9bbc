"""Pieces several page contexts share."""
from __future__ import annotations

import hashlib
import json

from sqlalchemy import select

from app.domain.mutations import MUTATION_TYPES
from app.extensions import db
from app.models import User


def allowed_types(roles: frozenset[str]) -> dict:
    """{'observation_record': True, ...}: which write forms this person may see."""
    return {name.replace(".", "_"): bool(roles & t.roles) for name, t in MUTATION_TYPES.items()}


def user_names(user_ids: set[str]) -> dict[str, str]:
    ids = {u for u in user_ids if u}
    if not ids:
        return {}
    rows = db.session.execute(select(User.id, User.display_name).where(User.id.in_(ids)))
    return {row.id: row.display_name for row in rows}


def patient_summary(record: dict) -> dict:
    return {"id": record["id"], "given_name": record["given_name"],
            "family_name": record["family_name"], "sex": record["sex"],
            "birth_date": record["birth_date"], "phone": record.get("phone"),
            "identifiers": record.get("identifiers", []), "version": record["version"]}


def fingerprint_of(text: str) -> str:
    """A short digest of what a page shows: the page sends it back when it refreshes itself,
    and an unchanged page is answered "nothing new" (no patient data, no audited read). The
    worker makes its own (static/sw/contexts.js fingerprintOf); the two need not agree."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def page_fingerprint(context: dict) -> str:
    """fingerprint_of everything in a page's context."""
    return fingerprint_of(json.dumps(context, sort_keys=True, separators=(",", ":"), default=str))
