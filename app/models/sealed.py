"""Sealed (encrypted) record fields: national ids, diagnoses, notes and their amendments.

Code reads and writes plaintext attributes (`note.text`); the mapped column beside it
(`note.text_stored`) holds what the database sees. The value is sealed just before the flush,
when the row id that binds it is known, and opened when it is read. Whole records copied into
JSON (history, stored results, the review list) are sealed the same way, each value bound to
the row it came from, so no copy holds plaintext either.

What is sealed, and why (docs/decisions.md, "Sensitive fields are sealed on the server"):
- a national-id identifier's value: the identifier's system stays clear, and a keyed blind
  index beside it keeps equality lookups working;
- every diagnosis's code and text: sealing only HIV and mental-health ones would mark
  exactly those rows as the sensitive ones;
- every note's and amendment's text: nothing tells a mental-health note from another.
"""
from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import event
from sqlalchemy.orm import Session

from app.crypto.configured import from_config
from app.crypto.field_cipher import FieldCipher, Place, decode_key, parse_keys

NATIONAL_ID = "national-id"
_PENDING = "_sealed_pending"  # plaintext set since the last flush, by attribute name
_OPENED = "_sealed_opened"  # attribute name -> (stored value, its plaintext)


def current_cipher() -> FieldCipher:
    """The app's cipher, rebuilt when its configured keys change (as a test's do)."""
    return from_config("field_cipher", ("FIELD_ENCRYPTION_KEYS", "FIELD_BLIND_INDEX_KEY"),
                       lambda keys, index_key: FieldCipher(
                           parse_keys(keys), decode_key(index_key, "FIELD_BLIND_INDEX_KEY")))


class SealedField:
    """A plaintext attribute over the mapped column `<name>_stored`."""

    def __set_name__(self, owner, name: str) -> None:
        self.name, self.stored = name, f"{name}_stored"

    def __get__(self, row, owner=None):
        if row is None:
            return self
        pending = row.__dict__.get(_PENDING, {})
        if self.name in pending:
            # A rollback expires the placeholder; what was set before it is then void.
            if self.stored in row.__dict__ and row.__dict__[self.stored] is None:
                return pending[self.name]
            del pending[self.name]
        stored = getattr(row, self.stored)
        opened = row.__dict__.setdefault(_OPENED, {})
        if self.name in opened and opened[self.name][0] == stored:
            return opened[self.name][1]
        plain = (current_cipher().open(stored, row.place_of(self.name))
                 if stored is not None and row.seals(self.name) else stored)
        opened[self.name] = (stored, plain)
        return plain

    def __set__(self, row, value) -> None:
        row.__dict__.setdefault(_PENDING, {})[self.name] = value
        # A placeholder the flush replaces: it marks the row dirty, and should anything write
        # the row without the flush hook, a NOT NULL column fails rather than stores plaintext.
        setattr(row, self.stored, None)


class SealedRow:
    """Mixin for models with SealedField attributes."""

    def seals(self, name: str) -> bool:
        return True

    def pending_plaintext(self) -> dict:
        """Values set since the last flush, by attribute name."""
        return self.__dict__.get(_PENDING, {})

    def place_of(self, name: str) -> Place:
        return Place(self.__tablename__, name, self.id)

    def seal_pending(self, cipher: FieldCipher) -> None:
        pending = self.__dict__.pop(_PENDING, {})
        opened = self.__dict__.setdefault(_OPENED, {})
        for name, plain in pending.items():
            if self.id is None:
                raise RuntimeError(f"{self.__tablename__}: a sealed value needs its row id first")
            stored = (cipher.seal(plain, self.place_of(name))
                      if plain is not None and self.seals(name) else plain)
            setattr(self, f"{name}_stored", stored)
            opened[name] = (stored, plain)


@event.listens_for(Session, "before_flush")
def _seal_before_flush(session, _context, _instances) -> None:
    rows = [r for r in (*session.new, *session.dirty)
            if isinstance(r, SealedRow) and r.__dict__.get(_PENDING)]
    if rows:
        cipher = current_cipher()
        for row in rows:
            row.seal_pending(cipher)


# --- Records as JSON ---------------------------------------------------------------------

def positions(entity: str, row_id: str | None, values: dict) -> Iterator[tuple[dict, str, Place]]:
    """Every place in a record (or in part of one) that holds a sealed value."""
    if entity == "patient_identifier":
        # A part of a record without its system is taken as a national id: sealing too much
        # is harmless, too little is not.
        if "value" in values and values.get("system", NATIONAL_ID) == NATIONAL_ID:
            yield values, "value", Place("patient_identifier", "value", row_id)
    elif entity == "patient":
        for item in values.get("identifiers") or []:
            if item.get("system") == NATIONAL_ID and "value" in item:
                yield item, "value", Place("patient_identifier", "value", item["id"])
    elif entity == "condition":
        for name in ("code", "text"):
            if values.get(name) is not None:
                yield values, name, Place("condition", name, row_id)
    elif entity in ("note", "note_addendum"):
        if values.get("text") is not None:
            yield values, "text", Place(entity, "text", row_id)
        if entity == "note":
            for item in values.get("addenda") or []:
                yield from positions("note_addendum", item.get("id"), item)


def _each_place(entity: str, row_id: str | None, values: dict | None, how: str) -> dict | None:
    """A copy of `values`, each sealed place passed through the cipher's `how` (seal, open)."""
    # Most records have no sealed place: they are returned as they are (nothing changes a
    # record in place), neither copied nor the cipher looked up.
    if not values or next(positions(entity, row_id, values), None) is None:
        return values
    changed = _copied(values)
    change = getattr(current_cipher(), how)
    for holder, key, place in positions(entity, row_id, changed):
        holder[key] = change(holder[key], place)
    return changed


def _copied(value):
    # JSON values: only their containers need copying (copy.deepcopy costs more than the
    # sealing of a record that has nothing to seal).
    if isinstance(value, dict):
        return {k: _copied(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copied(v) for v in value]
    return value


def seal_fields(entity: str, row_id: str | None, values: dict | None) -> dict | None:
    return _each_place(entity, row_id, values, "seal")


def open_fields(entity: str, row_id: str | None, values: dict | None) -> dict | None:
    return _each_place(entity, row_id, values, "open")


def seal_record(entity: str, record: dict) -> dict:
    return seal_fields(entity, record.get("id"), record)


def open_record(entity: str, record: dict) -> dict:
    return open_fields(entity, record.get("id"), record)


def seal_result(wire: dict) -> dict:
    """A mutation's answer as stored: its record and the conflicting server values sealed."""
    return _map_result(wire, seal_fields)


def open_result(wire: dict) -> dict:
    return _map_result(wire, open_fields)


def _map_result(wire: dict, fn) -> dict:
    out = dict(wire)
    entity, row_id = wire.get("entity", ""), wire.get("entity_id")
    if wire.get("record") is not None:
        out["record"] = fn(entity, wire["record"].get("id", row_id), wire["record"])
    if wire.get("conflict"):
        out["conflict"] = {**wire["conflict"],
                           "server": fn(entity, row_id, wire["conflict"].get("server"))}
    return out
