"""Turn a form post into a mutation and apply it: the form side of the one write path."""
from __future__ import annotations

from flask import g, request
from flask_login import current_user

from app.domain.ids import derived_id, is_uuid, new_id
from app.extensions import db
from app.models import MutationResult
from app.models.sealed import open_result
from app.services.apply import apply
from app.services.results import Mutation, Result, patient_of
from app.web import auditing


def form_mid(name: str = "") -> str:
    """A mutation id that is the same each time this form instance is sent.

    Pages carry one hidden `mid` token for all their forms; mixing in the form's address
    gives each form (and each record a worklist row acts on) its own id, so a double tap or a
    resend is a duplicate of the first send, and two different forms never share an id.
    """
    token = request.form.get("mid", "")
    if not is_uuid(token):
        token = new_id()
    return derived_id(token, f"{request.path}#{name}")


def replayed(mid: str) -> Result | None:
    """The stored result if this form submission was already applied (a double tap)."""
    stored = db.session.get(MutationResult, mid)
    return Result.from_stored(open_result(stored.result), "duplicate") if stored else None


def submit(type_name: str, entity: str, entity_id: str, data: dict, *, mid: str | None = None,
           base_version: int | None = None, base: dict | None = None,
           patient_id: str | None = None) -> Result:
    return submit_many([Mutation(mid=mid or form_mid(), type=type_name, entity=entity,
                                 entity_id=entity_id, data=data, base_version=base_version,
                                 base=base)], patient_id=patient_id)[0]


def submit_many(mutations: list[Mutation], patient_id: str | None = None) -> list[Result]:
    """All of a form's mutations commit together, or none (a rejected one is not written)."""
    actor = current_user.actor(request_id=g.get("request_id"))
    earlier = [replayed(m.mid) for m in mutations]
    if all(earlier):
        # The same form instance sent again (double tap, resend after a lost answer): its
        # values may differ only by things the server filled in, such as the time taken.
        return earlier
    results = [apply(m, actor, source="web") for m in mutations]
    failed = [r for r in results if r.status == "rejected"]
    if failed:
        db.session.rollback()
    entries = [auditing.entry(
        f"mutation.{m.type}", outcome=r.status, patient_id=patient_id or patient_of(m, r),
        detail={"mid": m.mid, "entity": m.entity, "entity_id": m.entity_id,
                "error": (r.error or {}).get("code")}) for m, r in zip(mutations, results)]
    auditing.audit.append(entries)  # raises: then nothing is committed
    if not failed:
        db.session.commit()
    return results

