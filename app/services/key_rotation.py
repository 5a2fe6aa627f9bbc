"""Bring every sealed value under the current field key, and count values per key id.

Walks the sealed columns of the clinical tables and the sealed places inside JSON copies
(history, stored results, the review list) in primary-key batches, one transaction per
batch. Only values under another key are rewritten, so a second run does nothing and an
interrupted run simply starts again. Rows the app changes meanwhile are not overwritten:
a column is rewritten only where it still holds what was read (the app seals its own writes
under the current key anyway), and history and stored results are never changed by the app.
"""
from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlalchemy import and_, select, true, update

from app.crypto.field_cipher import FieldCipher, Place, SealedValueError, key_id_of
from app.models import Condition, Conflict, EntityHistory, MutationResult, Note, NoteAddendum
from app.models import PatientIdentifier
from app.models.sealed import NATIONAL_ID, positions

ROTATE, SEAL_PLAINTEXT, UNSEAL = "rotate", "seal-plaintext", "unseal"
PLAINTEXT = "(plaintext)"  # the status line for values that are not sealed at all
BATCH_SIZE = 500


@dataclass
class Tally:
    name: str
    rows: int = 0
    rewritten: int = 0
    failures: list[str] = field(default_factory=list)
    key_ids: Counter = field(default_factory=Counter)


def _change(value, place: Place, cipher: FieldCipher, mode: str):
    """The value to store instead, or the same value when it is fine as it is."""
    kid = key_id_of(value)
    if mode == UNSEAL:
        return cipher.open(value, place) if kid else value
    if kid == cipher.current_kid:
        return value
    if kid is None:
        if mode != SEAL_PLAINTEXT:
            raise SealedValueError(f"{place} holds plaintext where a sealed value belongs.")
        return cipher.seal(value, place)
    return cipher.seal(cipher.open(value, place), place)


@dataclass(frozen=True)
class ColumnWalk:
    """Sealed columns of a clinical table."""
    model: type
    columns: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.model.__tablename__

    @property
    def table(self):
        return self.model.__table__

    def selected(self):
        extra = ["system", "value_index"] if self.model is PatientIdentifier else []
        return [self.table.c.id, *(self.table.c[c] for c in (*self.columns, *extra))]

    def seals(self, row) -> bool:
        return self.model is not PatientIdentifier or row.system == NATIONAL_ID

    def places(self, row) -> Iterator[tuple[str, Place]]:
        if self.seals(row):
            for column in self.columns:
                if getattr(row, column) is not None:
                    yield column, Place(self.name, column, row.id)

    def rewrite(self, row, cipher: FieldCipher, mode: str) -> dict:
        changes = {}
        for column, place in self.places(row):
            value = getattr(row, column)
            new = _change(value, place, cipher, mode)
            if new != value:
                changes[column] = new
        if self.model is PatientIdentifier and mode != UNSEAL:
            # A changed blind-index key is picked up here too: the plaintext is at hand.
            plain = (cipher.open(row.value, Place(self.name, "value", row.id))
                     if self.seals(row) and key_id_of(row.value) else row.value)
            index = cipher.blind_index(plain)
            if index != row.value_index:
                changes["value_index"] = index
        return changes

    def guard(self, row, changes: dict):
        # Rewrite only what still holds the value read: a concurrent edit wins.
        return and_(true(), *(self.table.c[c] == getattr(row, c) for c in changes))


@dataclass(frozen=True)
class JsonWalk:
    """Sealed places inside JSON copies of records."""
    model: type
    columns: tuple[str, ...]
    locate: Callable  # (row, column) -> [(entity, row id, the values)]
    guard_columns: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return self.model.__tablename__

    @property
    def table(self):
        return self.model.__table__

    def selected(self):
        names = ("entity", "entity_id")
        extra = [self.table.c[n] for n in (*names, *self.guard_columns) if n in self.table.c]
        return [self.table.primary_key.columns.values()[0], *extra,
                *(self.table.c[c] for c in self.columns)]

    def _places(self, values_by_column: dict, row) -> Iterator[tuple[dict, str, Place]]:
        for column, values in values_by_column.items():
            for entity, row_id, part in self.locate(row, column, values):
                yield from positions(entity, row_id, part)

    def places(self, row) -> Iterator[tuple[str, Place]]:
        values = {c: getattr(row, c) for c in self.columns if getattr(row, c)}
        for holder, key, place in self._places(values, row):
            yield key_id_of(holder[key]) or PLAINTEXT, place

    def rewrite(self, row, cipher: FieldCipher, mode: str) -> dict:
        changes = {}
        for column in self.columns:
            original = getattr(row, column)
            if not original:
                continue
            values = copy.deepcopy(original)
            changed = False
            for holder, key, place in self._places({column: values}, row):
                new = _change(holder[key], place, cipher, mode)
                if new != holder[key]:
                    holder[key], changed = new, True
            if changed:
                changes[column] = values
        return changes

    def guard(self, row, changes: dict):
        return and_(true(), *(self.table.c[c] == getattr(row, c) for c in self.guard_columns))


def _history(row, _column, record):
    return [(row.entity, record.get("id"), record)]


def _result(row, _column, wire):
    entity, row_id = wire.get("entity", ""), wire.get("entity_id")
    parts = []
    if wire.get("record"):
        parts.append((entity, wire["record"].get("id", row_id), wire["record"]))
    if (wire.get("conflict") or {}).get("server"):
        parts.append((entity, row_id, wire["conflict"]["server"]))
    return parts


def _conflict(row, column, values):
    if column == "resolution":
        return [(row.entity, row.entity_id, values.get("values") or {})]
    return [(row.entity, row.entity_id, values)]


WALKS = (
    ColumnWalk(PatientIdentifier, ("value",)),
    ColumnWalk(Condition, ("code", "text")),
    ColumnWalk(Note, ("text",)),
    ColumnWalk(NoteAddendum, ("text",)),
    JsonWalk(EntityHistory, ("record",), _history),
    JsonWalk(MutationResult, ("result",), _result),
    JsonWalk(Conflict, ("server_values", "incoming_values", "base_values", "resolution"),
             _conflict, guard_columns=("status",)),
)


def _batches(walk, connect: Callable[[], AbstractContextManager], batch_size: int):
    key = walk.selected()[0]
    after = None
    while True:
        with connect() as conn:
            query = select(*walk.selected()).order_by(key).limit(batch_size)
            if after is not None:
                query = query.where(key > after)
            rows = conn.execute(query).all()
            if not rows:
                return
            yield conn, rows
            after = getattr(rows[-1], key.name)


def reseal(cipher: FieldCipher, connect: Callable[[], AbstractContextManager], mode: str = ROTATE,
           progress: Callable[[Tally], None] = lambda tally: None,
           batch_size: int = BATCH_SIZE) -> list[Tally]:
    """Rewrite every sealed value that is not under the current key (or, with UNSEAL, every
    sealed value as plaintext). `connect()` gives one transaction per batch."""
    tallies = []
    for walk in WALKS:
        tally = Tally(walk.name)
        for conn, rows in _batches(walk, connect, batch_size):
            key = walk.selected()[0]
            for row in rows:
                tally.rows += 1
                try:
                    changes = walk.rewrite(row, cipher, mode)
                except SealedValueError as exc:
                    tally.failures.append(str(exc))
                    continue
                if changes:
                    done = conn.execute(update(walk.table).where(
                        key == getattr(row, key.name), walk.guard(row, changes)).values(**changes))
                    tally.rewritten += done.rowcount
            progress(tally)
        tallies.append(tally)
    return tallies


def status(connect: Callable[[], AbstractContextManager],
           batch_size: int = 2000) -> list[Tally]:
    """How many sealed values each key id holds, per table."""
    tallies = []
    for walk in WALKS:
        tally = Tally(walk.name)
        for _conn, rows in _batches(walk, connect, batch_size):
            for row in rows:
                tally.rows += 1
                if isinstance(walk, ColumnWalk):
                    tally.key_ids.update(key_id_of(getattr(row, column)) or PLAINTEXT
                                         for column, _place in walk.places(row))
                else:
                    tally.key_ids.update(kid for kid, _place in walk.places(row))
        tallies.append(tally)
    return tallies
