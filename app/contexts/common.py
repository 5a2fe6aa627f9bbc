"""Pieces several page contexts share."""
from __future__ import annotations

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
