"""Plain JSON-able records of rows: what history, the change log, sync and templates see."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal


_AS_THEY_ARE = frozenset({str, int, bool, float, type(None)})


def to_json_value(value):
    # Most values are already JSON's own: answered before any isinstance (records are made
    # field by field, thousands of times a push).
    if type(value) in _AS_THEY_ARE:
        return value
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    return value


class RecordMixin:
    """A row that can be written as a plain dict of its RECORD_FIELDS."""

    RECORD_FIELDS: tuple[str, ...] = ()
    # Relationships to_record() reads: a write must load them again before its record is kept.
    RECORD_RELATIONSHIPS: tuple[str, ...] = ()

    def to_record(self) -> dict:
        return {name: to_json_value(getattr(self, name)) for name in self.RECORD_FIELDS}

    @classmethod
    def record_of(cls, values: dict) -> dict:
        """to_record() of the row that `values` (by attribute) would make, without the row.
        A model whose to_record() adds to the fields says the same here."""
        return {name: to_json_value(values.get(name)) for name in cls.RECORD_FIELDS}
