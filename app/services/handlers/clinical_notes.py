"""Notes: drafted, edited while a draft, signed once, then only amended."""
from __future__ import annotations

from app.domain.merge import merge_fields
from app.models import Note, NoteAddendum
from app.models.types import utcnow
from app.services.handlers.observations import require_visit_of
from app.services.handlers.registry import handles
from app.services.results import Rejection
from app.services.writes import WriteContext


def _own_draft(ctx: WriteContext, note: Note, action: str) -> None:
    if note.created_by != ctx.actor.user_id:
        raise Rejection("forbidden", f"Only the author of a note can {action} it.")


@handles("note.write")
def write(ctx: WriteContext):
    data = ctx.mutation.data
    patient_id = ctx.require_patient(data["patient_id"])
    note = ctx.create(Note, {
        "patient_id": patient_id, "visit_id": require_visit_of(ctx, data.get("visit_id"), patient_id),
        "text": data["text"].strip(), "status": "draft"},
        patient_id=patient_id, clinic_id=ctx.actor.clinic_id)
    return ctx.applied(note)


@handles("note.edit")
def edit(ctx: WriteContext):
    note = ctx.load(Note, ctx.mutation.entity_id, "Note")
    ctx.require_patient(note.patient_id)
    _own_draft(ctx, note, "edit")
    if note.status == "signed":
        raise Rejection("note_signed", "This note is signed and cannot be edited. Add an amendment instead.")
    outcome = merge_fields(note.to_record(), ctx.mutation.base, ctx.mutation.data,
                           base_version_matches=ctx.mutation.base_version == note.version)
    if outcome.apply:
        ctx.update(note, {"text": outcome.apply["text"].strip()}, patient_id=note.patient_id,
                   clinic_id=None)
    if outcome.conflicts:
        return ctx.conflict(note, outcome.conflicts, ctx.mutation.data, ctx.mutation.base or {},
                            patient_id=note.patient_id, clinic_id=None,
                            applied_fields=sorted(outcome.apply))
    return ctx.applied(note)


@handles("note.sign")
def sign(ctx: WriteContext):
    note = ctx.load(Note, ctx.mutation.entity_id, "Note")
    ctx.require_patient(note.patient_id)
    _own_draft(ctx, note, "sign")
    stale = ctx.check_base_version(note, patient_id=note.patient_id, clinic_id=None,
                                   wanted={"status": "signed"})
    if stale:
        return stale
    if note.status == "signed":
        return ctx.applied(note)
    ctx.update(note, {"status": "signed", "signed_by": ctx.actor.user_id, "signed_at": utcnow()},
               patient_id=note.patient_id, clinic_id=None)
    return ctx.applied(note)


@handles("note.amend")
def amend(ctx: WriteContext):
    data = ctx.mutation.data
    note = ctx.load(Note, data["note_id"], "Note")
    ctx.require_patient(note.patient_id)
    if note.status != "signed":
        raise Rejection("note_not_signed", "This note is still a draft: edit it instead of amending it.")
    addendum = ctx.create(NoteAddendum, {"note_id": note.id, "patient_id": note.patient_id,
                                         "text": data["text"].strip()},
                          patient_id=note.patient_id, clinic_id=None)
    # The note's record lists its addenda, so devices holding the note see the amendment.
    ctx.update(note, {}, patient_id=note.patient_id, clinic_id=None)
    return ctx.applied(addendum)
