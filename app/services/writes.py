"""The steps every write shares: create or change a row, keep its history, log the change."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from itertools import chain

from sqlalchemy import bindparam, event, inspect, literal, select, union_all
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from app.domain.ids import is_uuid, new_id
from app.domain.mutations import MutationType
from app.extensions import db
from app.models import ChangeLog, Conflict, EntityHistory, Patient, Visit
from app.models.records import to_json_value
from app.models.sealed import SealedRow, seal_fields, seal_record
from app.models.types import utcnow
from app.services.actor import Actor
from app.services.results import APPLIED, CONFLICT, Mutation, Rejection, Result
from app.services import pokes
from app.services.bulk_rows import insert_into_tables
from app.services.scope import visible_in_clinic


@dataclass
class BatchLookups:
    """What a batch of mutations will ask the database, each asked once for the batch."""
    # Of the patients the batch names, those this clinic may see. A handler that only adds
    # to a patient's record needs no more than that: ids and columns, not ORM objects, which
    # cost several times the query to build.
    visible_patients: set[str] = field(default_factory=set)
    # Patients the batch changes, locked together in id order: one round trip, and two
    # pushes locking overlapping patients take them in the same order, so neither deadlocks.
    # Every row lock here is FOR NO KEY UPDATE (key_share): ids never change, and a plain
    # FOR UPDATE would conflict with the FOR KEY SHARE lock that inserting a reading takes on
    # its patient through the foreign key, which deadlocked concurrent pushes.
    locked_patients: dict[str, Patient] = field(default_factory=dict)
    # Each named visit's patient.
    visit_patients: dict[str, str] = field(default_factory=dict)

    @classmethod
    def prefetch(cls, mutations: list[Mutation], actor: Actor) -> BatchLookups:
        lookups = cls()
        patient_ids = _named(mutations, "patient_id")
        visit_ids = _named(mutations, "visit_id")
        if not actor.clinic_id:
            patient_ids = set()  # no clinic sees them
        for kind, row_id, patient_id in _patients_and_visits(patient_ids, visit_ids,
                                                             actor.clinic_id):
            if kind == "patient":
                lookups.visible_patients.add(row_id)
            else:
                lookups.visit_patients[row_id] = patient_id
        changed = {m.entity_id for m in mutations
                   if m.type in PATIENT_CHANGES and is_uuid(m.entity_id)}
        if actor.clinic_id:
            for patient in _by_ids(_locked_patients(), changed, clinic_id=actor.clinic_id):
                lookups.locked_patients[patient.id] = patient
        return lookups


class AppendedRows:
    """Rows a batch adds to the tables a write only ever adds to (history, change log, stored
    answers), and the changes it makes to rows already stored, kept as plain values and
    written with one statement per table.

    Nothing in a push reads these rows back before they are written, and the ORM's unit of
    work (an object, its state and a flush plan per row) cost more than the rows themselves."""

    def __init__(self) -> None:
        self.rows: dict[type, list[dict]] = {}
        # Each changed row, and its new values by column (with its "id").
        self.changes: dict[tuple[type, str], tuple[object, dict]] = {}
        # Rows changed by key, written after the others: (table, key column, key, values).
        self.updates: list[tuple] = []

    def add(self, model, row: dict) -> None:
        """`row` by column name, every row of a model with the same columns."""
        self.rows.setdefault(model, []).append(row)

    def change(self, row, values: dict) -> None:
        """`row` (stored before this batch) takes `values`, by attribute. The object shows them
        at once, as loaded; the database gets them at write(), so a SQL query later in the
        batch still sees the row as it was. A handler that counts rows in SQL may then refuse
        what it would have taken; the batch is then applied one by one, with the right answer."""
        for name, value in values.items():
            set_committed_value(row, name, value)
        _, new_values = self.changes.setdefault((type(row), row.id), (row, {"id": row.id}))
        columns = _column_names(type(row))
        new_values.update((columns[name], value) for name, value in values.items())

    def set_where(self, model, key: str, key_value, values: dict) -> None:
        """The row of `model` whose column `key` holds `key_value` takes `values` (by column),
        in the same statement as the appended rows where it can: a change the session does
        not know of, for a row no query of the batch reads again."""
        self.updates.append((model.__table__, key, key_value, values))

    def write(self) -> None:
        if not self.rows and not self.changes and not self.updates:
            return
        changed: dict[tuple, list[dict]] = {}
        for (model, _), (_, values) in self.changes.items():
            changed.setdefault((model, tuple(values)), []).append(values)
        insert_into_tables(db.session.connection(),
                           [(model.__table__, rows) for model, rows in self.rows.items()],
                           self.updates,
                           [(model.__table__, rows) for (model, _), rows in changed.items()])
        # As a flush would: a record listing rows of these kinds is read again after a write.
        db.session.info.setdefault(_WRITTEN, set()).update(self.rows)
        self._clear()

    def forget(self) -> None:
        """After a rollback: the changed objects no longer match the database (a rollback
        expires only what the unit of work wrote), so they are read again when next used."""
        for row, _ in self.changes.values():
            if inspect(row).persistent:  # a row made in the rolled-back savepoint is gone
                db.session.expire(row)
        self._clear()

    def _clear(self) -> None:
        self.rows.clear()
        self.changes.clear()
        self.updates.clear()


@dataclass(frozen=True)
class Appended:
    """A record written with the appended rows (WriteContext.append): what its answer needs."""
    id: str
    version: int


# Mutations of a patient's own record, which lock it by its id (the mutation's entity_id).
PATIENT_CHANGES = frozenset({"patient.update"})


def with_defaults(model, fields: dict) -> dict:
    """`fields` with the column defaults a flush would add, so the row's record is complete
    before it reaches the database."""
    complete = dict(fields)
    for key, default in _defaults(model):
        if key not in complete:
            complete[key] = default.arg if default.is_scalar else default.arg(None)
    return complete


@functools.cache
def _columns(model) -> tuple:
    """(attribute, column name) of every column of a model whose rows may be appended: one
    whose values need nothing a flush would do (no sealed field, no related rows) and whose
    record follows from them."""
    mapper = inspect(model)
    if (issubclass(model, SealedRow) or mapper.relationships
            or ("to_record" in vars(model)) != ("record_of" in vars(model))):
        raise TypeError(f"{model.__name__} rows are written through the session")
    return tuple(_column_names(model).items())


@functools.cache
def _column_names(model) -> dict[str, str]:
    """Each column attribute of a model, and the name of its column in the table."""
    return {prop.key: prop.columns[0].key for prop in inspect(model).column_attrs}


def _changed_in_bulk(row) -> bool:
    """Whether a deferred change of `row` may bypass the unit of work: not for a row not yet
    stored, nor for one whose sealed fields a flush seals."""
    return not isinstance(row, SealedRow) and inspect(row).persistent


@functools.cache
def _defaults(model) -> tuple:
    """The model's Python-side column defaults, (attribute, default), read once per model."""
    return tuple((prop.key, prop.columns[0].default) for prop in inspect(model).column_attrs
                 if prop.columns[0].default is not None
                 and (prop.columns[0].default.is_scalar or prop.columns[0].default.is_callable))


def _named(mutations: list[Mutation], name: str) -> set[str]:
    # Before validation: any JSON may stand where an id belongs.
    return {m.data.get(name) for m in mutations if isinstance(m.data, dict)
            and is_uuid(m.data.get(name))}


def _by_ids(query, ids: set[str], **parameters) -> list:
    ids = sorted(ids)
    found = []
    for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
        found.extend(db.session.scalars(query, {"ids": ids[start:start + 500], **parameters})
                     .unique())
    return found


def _patients_and_visits(patient_ids: set[str], visit_ids: set[str],
                         clinic_id: str | None) -> list:
    """("patient", id, id) for each named patient the clinic may see, ("visit", id, its
    patient's id) for each named visit: one query, as nearly every reading names both."""
    patient_ids, visit_ids = sorted(patient_ids), sorted(visit_ids)
    found = []
    for start in range(0, max(len(patient_ids), len(visit_ids)), 250):  # 500 parameters
        found.extend(db.session.execute(_patients_and_visits_query(), {
            "patient_ids": patient_ids[start:start + 250],
            "visit_ids": visit_ids[start:start + 250], "clinic_id": clinic_id}))
    return found


# The batch's queries are built once, their ids and clinic as parameters: building the
# statement (and its cache key) again for every push cost about as much as running it.
@functools.cache
def _patients_and_visits_query():
    patients = select(literal("patient"), Patient.id, Patient.id).where(
        Patient.id.in_(bindparam("patient_ids", expanding=True)),
        visible_in_clinic(bindparam("clinic_id")))
    visits = select(literal("visit"), Visit.id, Visit.patient_id).where(
        Visit.id.in_(bindparam("visit_ids", expanding=True)))
    return union_all(patients, visits)


@functools.cache
def _locked_patients():
    # The identifiers (part of a patient's record) come in the same query, joined: a second
    # query for them was a round trip and a third of the cost of loading the patients.
    return (select(Patient).where(Patient.id.in_(bindparam("ids", expanding=True)),
                                  visible_in_clinic(bindparam("clinic_id")))
            .order_by(Patient.id)
            .with_for_update(of=Patient, key_share=True)
            .options(joinedload(Patient.identifiers)))


@dataclass
class WriteContext:
    mutation: Mutation
    actor: Actor
    mtype: MutationType
    lookups: BatchLookups | None = None
    # Deferred: the caller flushes the whole batch at once and, should anything fail, applies
    # it again mutation by mutation; so checks that only a flush can settle are left to it.
    deferred: bool = False
    # Deferred, the batch's rows, which the caller writes; else this mutation's own.
    appended: AppendedRows = field(default_factory=AppendedRows)
    _recorded: tuple | None = field(default=None, init=False, repr=False)

    # Reading -------------------------------------------------------------------------------
    def load(self, model, entity_id: str, label: str):
        """The stored row, locked for this transaction."""
        row = db.session.execute(select(model).where(model.id == entity_id)
                                 .with_for_update(key_share=True)).scalar_one_or_none()
        if row is None:
            raise Rejection("not_found", f"{label} {entity_id} was not found.")
        return row

    def require_patient(self, patient_id: str) -> str:
        """`patient_id`, if this clinic may see that patient."""
        if self.lookups and patient_id in self.lookups.visible_patients:
            return patient_id
        return self._in_clinic(select(Patient.id), patient_id)

    def lock_patient(self, patient_id: str) -> Patient:
        """The patient, if this clinic may see them, locked for this transaction."""
        if self.lookups and patient_id in self.lookups.locked_patients:
            return self.lookups.locked_patients[patient_id]
        return self._in_clinic(select(Patient).with_for_update(of=Patient, key_share=True),
                               patient_id)

    def _in_clinic(self, query, patient_id: str):
        # A patient outside the actor's clinic is reported exactly like a missing one,
        # so ids cannot be probed across clinics. One query answers both.
        found = None
        if self.actor.clinic_id:
            found = db.session.execute(query.where(
                Patient.id == patient_id, visible_in_clinic(self.actor.clinic_id))).scalar()
        if found is None:
            raise Rejection("not_found", f"Patient {patient_id} was not found in this clinic.")
        return found

    def patient_of_visit(self, visit_id: str) -> str:
        """The patient a stored visit belongs to."""
        if self.lookups and visit_id in self.lookups.visit_patients:
            return self.lookups.visit_patients[visit_id]
        patient_id = db.session.execute(
            select(Visit.patient_id).where(Visit.id == visit_id)).scalar()
        if patient_id is None:
            raise Rejection("not_found", f"Visit {visit_id} was not found.")
        return patient_id

    def require_own_clinic(self, clinic_id: str | None) -> str:
        clinic_id = clinic_id or self.actor.clinic_id
        if clinic_id != self.actor.clinic_id:
            raise Rejection("forbidden", "You can only do this for the clinic you are signed in to.")
        return clinic_id

    # Writing -------------------------------------------------------------------------------
    def insert(self, model, fields: dict):
        """Add the mutation's new row without logging it yet (for records built in steps)."""
        row = model(**self._new_row(model, fields))
        db.session.add(row)
        self._flush()
        return row

    def create(self, model, fields: dict, *, patient_id: str | None, clinic_id: str | None):
        row = self.insert(model, fields)
        self.record(row, patient_id=patient_id, clinic_id=clinic_id)
        return row

    def append(self, model, fields: dict, *, patient_id: str | None,
               clinic_id: str | None) -> Appended:
        """create(), for a record no handler reads back within a push (an observation): its
        row goes with the appended rows (AppendedRows), and its record is made from the
        values (model.record_of), without an ORM object to build, track and flush."""
        values = self._new_row(model, fields)
        self.appended.add(model, {column: values[key] for key, column in _columns(model)})
        appended = Appended(values["id"], values["version"])
        self._keep(model.__tablename__, appended, model.record_of(values),
                   patient_id=patient_id, clinic_id=clinic_id)
        return appended

    def _new_row(self, model, fields: dict) -> dict:
        # Deferred, a taken id surfaces at the batch's flush, and the mutation-by-mutation
        # retry then answers it here.
        if not self.deferred and db.session.get(model, self.mutation.entity_id) is not None:
            raise Rejection("entity_exists",
                            f"A record with id {self.mutation.entity_id} already exists.")
        now = utcnow()
        return with_defaults(model, {
            "id": self.mutation.entity_id, "version": 1, "created_at": now, "updated_at": now,
            "created_by": self.actor.user_id, **fields})

    def update(self, row, changes: dict, *, patient_id: str | None, clinic_id: str | None,
               before: dict | None = None):
        """`before`: the row's record as the handler read it before these changes, if it did,
        so the new record is that one with the changes rather than read again whole."""
        values = {**changes, "version": row.version + 1, "updated_at": utcnow()}
        if self.deferred and _changed_in_bulk(row):
            self.appended.change(row, values)
        else:
            for name, value in values.items():
                setattr(row, name, value)
        db.session.info.setdefault(_WRITTEN, set()).add(type(row))
        self._flush()
        self.record(row, patient_id=patient_id, clinic_id=clinic_id,
                    changed=(before, (*changes, "version", "updated_at")))
        return row

    def record(self, row, *, patient_id: str | None, clinic_id: str | None,
               changed: tuple[dict | None, tuple[str, ...]] = (None, ())) -> None:
        """Keep this version of the row in its history and announce it in the change log."""
        entity = row.__tablename__
        before, names = changed
        stale = [name for name in row.RECORD_RELATIONSHIPS if _may_have_changed(row, name)]
        if stale:
            # The record's related rows must reflect this write: load them again after it.
            db.session.flush()
            db.session.expire(row, stale)
            before = None
        record = row.to_record() if before is None else {
            **before, **{name: to_json_value(getattr(row, name)) for name in names
                         if name in before}}
        self._keep(entity, row, record, patient_id=patient_id, clinic_id=clinic_id)

    def _keep(self, entity: str, row, record: dict, *, patient_id: str | None,
              clinic_id: str | None) -> None:
        now = utcnow()
        self._recorded = (row, row.version, record)
        self.appended.add(EntityHistory, {
            "entity": entity, "entity_id": row.id, "version": row.version,
            "record": seal_record(entity, record), "mid": self.mutation.mid,
            "changed_by": self.actor.user_id, "changed_at": now})
        clinic_id = clinic_id or self.actor.clinic_id
        self.appended.add(ChangeLog, {
            "entity": entity, "entity_id": row.id,
            "version": row.version, "op": "put", "clinic_id": clinic_id, "patient_id": patient_id,
            "origin_mid": self.mutation.mid, "origin_client_id": self.mutation.client_id,
            "origin_seq": self.mutation.seq, "created_at": now})
        self._flush()
        pokes.announce(clinic_id)

    def _flush(self) -> None:
        if not self.deferred:
            db.session.flush()
            self.appended.write()

    # Answers -------------------------------------------------------------------------------
    def applied(self, row) -> Result:
        return Result(mid=self.mutation.mid, status=APPLIED, entity=self.mutation.entity,
                      entity_id=row.id, version=row.version, record=self._record_of(row))

    def _record_of(self, row) -> dict:
        # The version just kept in the history is the one answered: its record is made once.
        recorded = self._recorded
        if recorded is not None and recorded[0] is row and recorded[1] == row.version:
            return recorded[2]
        return row.to_record()

    def check_base_version(self, row, *, patient_id: str | None, clinic_id: str | None,
                           wanted: dict) -> Result | None:
        """The version policy: a stale base is a conflict, unless the change is already in effect."""
        if self.mutation.base_version is None:
            raise Rejection("base_version_required",
                            "This change needs the version of the record it was made on.")
        if self.mutation.base_version == row.version:
            return None
        record = row.to_record()
        if all(record.get(k) == v for k, v in wanted.items()):
            return self.applied(row)
        fields = sorted(k for k, v in wanted.items() if record.get(k) != v) or sorted(wanted)
        return self.conflict(row, fields, wanted, {}, patient_id=patient_id, clinic_id=clinic_id,
                             applied_fields=[])

    def conflict(self, row, fields: list[str], incoming: dict, base: dict, *,
                 patient_id: str | None, clinic_id: str | None,
                 applied_fields: list[str]) -> Result:
        record = row.to_record()
        db.session.add(Conflict(
            id=new_id(), clinic_id=clinic_id or self.actor.clinic_id, patient_id=patient_id,
            entity=row.__tablename__, entity_id=row.id, mid=self.mutation.mid,
            mutation_type=self.mutation.type, fields=fields,
            server_values=seal_fields(row.__tablename__, row.id, {f: record.get(f) for f in fields}),
            incoming_values=seal_fields(row.__tablename__, row.id,
                                        {f: incoming.get(f) for f in fields}),
            base_values=seal_fields(row.__tablename__, row.id,
                                    {f: base.get(f) for f in fields if f in base}),
            server_version=row.version, raised_by=self.actor.user_id))
        self._flush()
        return Result(mid=self.mutation.mid, status=CONFLICT, entity=self.mutation.entity,
                      entity_id=row.id, version=row.version, record=record,
                      conflict={"fields": fields, "server": {f: record.get(f) for f in fields},
                                "applied": applied_fields})


_WRITTEN = "classes_written"


def _may_have_changed(row, relationship: str) -> bool:
    """Whether rows of the relationship's kind were written in this transaction: if not, the
    collection loaded with the row is still what the database holds."""
    related = _related_class(type(row), relationship)
    session = db.session()
    if related in session.info.get(_WRITTEN, ()):
        return True
    # A row changed through update() is noted as written there: looking through every changed
    # row of a batch not yet flushed, at each record, cost more than the batch's writes.
    return any(isinstance(other, related) for other in chain(session.new, session.deleted))


@functools.cache
def _related_class(model, relationship: str) -> type:
    return inspect(model).relationships[relationship].mapper.class_


def kinds_written(session: Session) -> set[type]:
    """The models whose rows this transaction has written so far, through a flush or here."""
    return session.info.get(_WRITTEN, set())


@event.listens_for(Session, "before_flush")
def _note_written(session: Session, _context, _instances) -> None:
    written = session.info.setdefault(_WRITTEN, set())
    written.update(type(row) for row in (*session.new, *session.dirty, *session.deleted))


@event.listens_for(Session, "after_transaction_end")
def _forget_transaction(session: Session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_WRITTEN, None)
