"""Push: each client's mutations applied exactly once, in the order the device made them."""
from __future__ import annotations

from sqlalchemy import select

from app.extensions import db
from app.models import MutationResult, SyncClient
from app.models.types import utcnow
from app.services import audit
from app.services.actor import Actor
from app.services.apply import (
    StoredAnswer, answer_again, apply_in_order, rejected_result, stored_results,
)
from app.services.results import DUPLICATE, Mutation, Rejection, Result, patient_of
from app.services.writes import AppendedRows
from sync_api import turns
from sync_api.clients import ClaimedClient
from sync_api.subset import DeviceView, allowed_categories


def push_batch(actor: Actor, client: ClaimedClient, wire_mutations: list[dict],
               careful: bool = False) -> tuple[int, dict]:
    """Apply the batch in seq order; the caller commits results, last_seq and effects together.

    A seq at or below last_seq is a resend and gets its stored answer; the next seq applies;
    a gap stops the batch (409) after everything before it, which the caller still commits.

    Raises BatchNeedsCare unless `careful`: the caller then rolls back, claims the client
    again and calls this once more with `careful`, which answers every mutation.
    """
    mutations = [Mutation.from_wire(body, client.client_id) for body in wire_mutations]
    steps, last_seq, gap_at = _in_seq_order(mutations, client.last_seq)
    # A resend (a seq already used) is answered from its stored answer. A new mutation's id
    # is looked up only when answering with care: on the first attempt an id already stored
    # breaks the stored answers' key as the batch is written, and the batch is then applied
    # with care. A push of new mutations, nearly every push, asks one query less.
    stored = stored_results([m.mid for m in mutations] if careful else
                            [step.mid for step in steps if isinstance(step, Mutation)])
    # The device's progress, known before anything applies: written once, with the first
    # run's rows (one statement) or on its own.
    progress = AppendedRows()
    now = utcnow()
    progress.set_where(SyncClient, "client_id", client.client_id,
                       {"last_seq": last_seq, "last_push_at": now})
    answered: list[tuple[Mutation, Result]] = []
    new: list[tuple[Mutation, Result]] = []
    for step in steps:
        if isinstance(step, Mutation):
            answered.append((step, _resent(step, client.client_id, stored)))
            continue
        for mutation, result in zip(step, apply_in_order(step, actor, "sync", stored,
                                                         in_savepoint=careful,
                                                         written_with=progress)):
            answered.append((mutation, result))
            if result.status != DUPLICATE:
                new.append((mutation, result))
    progress.write()
    client.last_seq = last_seq
    results = []
    for mutation, result in answered:
        result.seq = mutation.seq
        results.append(result)
    _audit(actor, client.client_id, new)
    view = DeviceView(allowed_categories(actor.roles), utcnow())
    response = {"results": [_for_device(r, view) for r in results],
                "last_seq": client.last_seq}
    if gap_at is None:
        return 200, response
    expected = client.last_seq + 1
    return 409, {"error": "out_of_order", "expected_seq": expected,
                 "message": f"Mutation seq {gap_at} arrived before seq {expected}. Nothing from "
                            f"seq {gap_at} on was applied; send again from seq {expected}.",
                 **response}


def _in_seq_order(mutations: list[Mutation], last_seq: int) -> tuple[list, int, int | None]:
    """The batch as steps: runs of consecutive new mutations (applied together, so every
    answer is the one a mutation-by-mutation pass would give) and single resends; then the
    last seq answered, and the seq of a gap that stops the batch (409), if any."""
    steps: list[list[Mutation] | Mutation] = []
    for mutation in mutations:
        if mutation.seq == last_seq + 1:
            if not steps or not isinstance(steps[-1], list):
                steps.append([])
            steps[-1].append(mutation)
            last_seq = mutation.seq
        elif mutation.seq > last_seq:
            return steps, last_seq, mutation.seq
        else:
            steps.append(mutation)
    return steps, last_seq, None


def _for_device(result: Result, view: DeviceView) -> dict:
    """An answer carries the record as the device may hold it, like a pull would."""
    body = result.to_wire()
    if body.get("record") is not None:
        record = view.of(result.entity, body["record"])
        if record is None:
            del body["record"]
        else:
            body["record"] = record
    if body.get("conflict") and body.get("record") is None:
        body["conflict"] = {**body["conflict"], "server": {}}
    return body


def _resent(mutation: Mutation, client_id: str,
            stored_by_mid: dict[str, MutationResult | StoredAnswer]) -> Result:
    stored = stored_by_mid.get(mutation.mid)
    if stored is not None:
        return answer_again(stored, mutation)
    holder = db.session.execute(select(MutationResult.mid).where(
        MutationResult.client_id == client_id, MutationResult.seq == mutation.seq)).scalar()
    detail = "another mutation" if holder else "a mutation whose result is no longer kept"
    return _reject(mutation, "seq_reused",
                   f"Sequence number {mutation.seq} was already used by {detail}. This "
                   "mutation was not applied; give it the next free sequence number.")


def _reject(mutation: Mutation, code: str, message: str) -> Result:
    return rejected_result(mutation, Rejection(code, message))


def _audit(actor: Actor, client_id: str, new: list[tuple[Mutation, Result]]) -> None:
    """One event per newly answered mutation; raises AuditUnavailable, and then nothing commits."""
    turns.step_aside()
    audit.append([audit.AuditEntry(
        action=f"mutation.{m.type}", outcome=r.status, user_id=actor.user_id,
        username=actor.username, role=actor.role_names, clinic_id=actor.clinic_id,
        patient_id=patient_of(m, r), device=client_id, request_id=actor.request_id,
        detail={"mid": m.mid, "seq": m.seq, "entity": m.entity, "entity_id": m.entity_id,
                "error": (r.error or {}).get("code")}) for m, r in new])

