"""apply(): the one way clinical data is written (DESIGN.md §2).

Validate, authorize, apply the type's conflict policy, write rows, history and
change log, and store the result under the mutation id, in the caller's
transaction. It flushes and never commits.
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.domain.mutations import ENVELOPE_SCHEMA, MUTATION_TYPES
from app.domain.validation import validate
from app.extensions import db
from app.models import MutationResult
from app.models.sealed import current_cipher, open_result, seal_result
from app.models.types import utcnow
from app.services.actor import Actor
from app.services.handlers import HANDLERS
from app.services.results import DUPLICATE, REJECTED, Mutation, Rejection, Result
from app.services.writes import AppendedRows, BatchLookups, WriteContext


@dataclass(frozen=True)
class StoredAnswer:
    """What a resend is answered from: a stored answer as a push reads it, or one written
    earlier in the same push (whose row was written without an ORM object)."""
    client_id: str | None
    payload_hash: str
    status: str
    result: dict


def check_envelope(body: dict) -> list[dict]:
    """Problems with the shape of one mutation as it arrived over the wire."""
    return [p.as_dict() for p in validate(ENVELOPE_SCHEMA, body)]


def same_payload(stored: MutationResult | StoredAnswer, mutation: Mutation) -> bool:
    # Results stored before payload hashes were keyed carry the plain hash.
    return stored.payload_hash in (mutation.payload_hash(current_cipher().payload_key),
                                   mutation.payload_hash())


def stored_results(mids: list[str]) -> dict[str, StoredAnswer]:
    """The stored answers among `mids`, in one query: a push looks its whole batch up at once
    instead of asking once per mutation (most are new, and a miss always costs a query)."""
    found: dict[str, StoredAnswer] = {}
    for start in range(0, len(mids), 500):  # SQLite's bound-parameter limit
        found.update((row.mid, StoredAnswer(row.client_id, row.payload_hash, row.status,
                                            row.result))
                     for row in db.session.execute(_STORED, {"mids": mids[start:start + 500]}))
    return found


# Built once, as the batch's other reads (writes.BatchLookups); columns, not ORM objects,
# as nothing changes a stored answer.
_STORED = (select(MutationResult.mid, MutationResult.client_id, MutationResult.payload_hash,
                  MutationResult.status, MutationResult.result)
           .where(MutationResult.mid.in_(bindparam("mids", expanding=True))))


def answer_again(stored: MutationResult | StoredAnswer, mutation: Mutation) -> Result:
    """The answer to a mutation whose id already has a stored answer (a resend)."""
    # Another device's mutation id (or a form's) is not this device's to replay.
    if not same_payload(stored, mutation) or stored.client_id != mutation.client_id:
        return rejected_result(mutation, Rejection(
            "mid_reused", "This mutation id was already used for a different change."))
    # A rejected mutation was never applied: sent again, it is rejected again, not called a
    # duplicate (which would read as if it had been applied).
    return Result.from_stored(open_result(stored.result),
                              REJECTED if stored.status == REJECTED else DUPLICATE)


def apply(mutation: Mutation, actor: Actor, source: str,
          stored_by_mid: dict[str, MutationResult | StoredAnswer] | None = None,
          lookups: BatchLookups | None = None) -> Result:
    """`stored_by_mid`: the batch's stored answers (stored_results), kept up to date here,
    so a mid sent twice in one batch is still answered from the first."""
    stored = (stored_by_mid.get(mutation.mid) if stored_by_mid is not None
              else db.session.get(MutationResult, mutation.mid))
    if stored is not None:
        return answer_again(stored, mutation)

    try:
        with db.session.begin_nested():
            result = _apply_new(WriteContext(mutation, actor, None, lookups))
    except Rejection as rejection:
        result = rejected_result(mutation, rejection)
    except IntegrityError as exc:
        # A constraint the handlers did not foresee: the same mutation would break it on
        # every resend, so it is answered for good instead of blocking the device's queue.
        result = rejected_result(mutation, Rejection(
            "integrity", "This change contradicts records already on the server and was not "
            f"applied ({type(exc.orig).__name__})."))
    except SQLAlchemyError:
        raise  # a database fault is transient: the caller rolls back and the client retries

    appended = AppendedRows()
    _store(mutation, result, actor, source, stored_by_mid, appended)
    db.session.flush()
    appended.write()
    return result


class BatchNeedsCare(Exception):
    """A batch written in the caller's transaction, without a savepoint of its own, was refused
    or broke a constraint: the caller rolls its transaction back and applies the batch again
    with `in_savepoint=True`, which gives each mutation its own answer."""


def apply_in_order(mutations: list[Mutation], actor: Actor, source: str,
                   stored_by_mid: dict[str, MutationResult | StoredAnswer],
                   in_savepoint: bool = True,
                   written_with: AppendedRows | None = None) -> list[Result]:
    """Apply a device's new mutations in their order, as apply() would one by one.

    They are first written together: one flush for the lot, so each table's rows go to the
    database in a few statements (the appended ones, AppendedRows, in one per table). A batch
    of one goes this way too, as it asks fewer questions of the database (a taken id, say,
    shows as the INSERT fails rather than by a lookup first). Should any of them be refused or
    break a constraint, that attempt is undone and they are applied one by one, each then
    getting its own answer (DESIGN.md §5).

    Undone how: with `in_savepoint`, the attempt has a savepoint of its own, rolled back here.
    Without, it raises BatchNeedsCare for the caller to roll back its whole transaction: a
    batch nearly always applies, and the savepoint's two statements were a sixth of a small
    push's round trips.

    `written_with`: the caller's own rows, written with the batch's when there is no
    savepoint (and so nothing of the batch is undone alone); else left to the caller."""
    if not mutations:
        return []
    lookups = BatchLookups.prefetch(mutations, actor)
    if not in_savepoint:
        try:
            return _apply_together(mutations, actor, source, stored_by_mid, lookups,
                                   written_with or AppendedRows())
        except (Rejection, IntegrityError) as failed:
            raise BatchNeedsCare() from failed
    known = dict(stored_by_mid)
    appended = AppendedRows()
    try:
        with db.session.begin_nested():
            return _apply_together(mutations, actor, source, stored_by_mid, lookups, appended)
    except (Rejection, IntegrityError):
        appended.forget()
        stored_by_mid.clear()
        stored_by_mid.update(known)
    return [apply(m, actor, source, stored_by_mid, lookups) for m in mutations]


def _apply_together(mutations: list[Mutation], actor: Actor, source: str,
                    stored_by_mid: dict[str, MutationResult | StoredAnswer],
                    lookups: BatchLookups, appended: AppendedRows) -> list[Result]:
    results = [_apply_deferred(m, actor, source, stored_by_mid, lookups, appended)
               for m in mutations]
    db.session.flush()
    appended.write()
    return results


def _apply_deferred(mutation: Mutation, actor: Actor, source: str,
                    stored_by_mid: dict[str, MutationResult | StoredAnswer],
                    lookups: BatchLookups, appended: AppendedRows) -> Result:
    stored = stored_by_mid.get(mutation.mid)
    if stored is not None:
        return answer_again(stored, mutation)
    result = _apply_new(WriteContext(mutation, actor, None, lookups, deferred=True,
                                     appended=appended))
    _store(mutation, result, actor, source, stored_by_mid, appended)
    return result


def _store(mutation: Mutation, result: Result, actor: Actor, source: str,
           stored_by_mid: dict[str, MutationResult | StoredAnswer] | None,
           appended: AppendedRows) -> None:
    result.seq = mutation.seq
    answer = StoredAnswer(client_id=mutation.client_id,
                          payload_hash=mutation.payload_hash(current_cipher().payload_key),
                          status=result.status, result=seal_result(result.to_wire()))
    appended.add(MutationResult, {
        "mid": mutation.mid, "client_id": answer.client_id, "seq": mutation.seq,
        "type": mutation.type, "payload_hash": answer.payload_hash, "status": answer.status,
        "result": answer.result, "user_id": actor.user_id, "source": source,
        "client_ts": mutation.client_ts, "created_at": utcnow()})
    if stored_by_mid is not None:
        stored_by_mid[mutation.mid] = answer


def _apply_new(ctx: WriteContext) -> Result:
    mutation, actor = ctx.mutation, ctx.actor
    mtype = MUTATION_TYPES.get(mutation.type)
    if mtype is None:
        raise Rejection("unknown_type", f"Unknown mutation type {mutation.type!r}.")
    if mutation.entity != mtype.entity:
        raise Rejection("wrong_entity",
                        f"{mutation.type} changes a {mtype.entity}, not a {mutation.entity}.")
    if not (actor.roles & mtype.roles):
        raise Rejection("forbidden", f"Your role does not allow this: {mtype.label.lower()}.")
    problems = validate(mtype.schema, mutation.data)
    if problems:
        raise Rejection("invalid", problems[0].message, [p.as_dict() for p in problems])
    ctx.mtype = mtype
    return HANDLERS[mutation.type](ctx)


def rejected_result(mutation: Mutation, rejection: Rejection) -> Result:
    """The answer to a mutation that will never apply as sent."""
    return Result(mid=mutation.mid, status=REJECTED, entity=mutation.entity,
                  entity_id=mutation.entity_id, error=rejection.as_error(), seq=mutation.seq)
