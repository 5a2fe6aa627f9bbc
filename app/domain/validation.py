"""JSON Schema validation with messages a person can act on, each naming its field."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

import jsonschema_rs
from jsonschema import Draft202012Validator, FormatChecker

FORMAT_CHECKER = FormatChecker(formats=())


@FORMAT_CHECKER.checks("date", raises=ValueError)
def _is_date(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if len(value) != 10:
        raise ValueError("not YYYY-MM-DD")
    date.fromisoformat(value)
    return True


@FORMAT_CHECKER.checks("date-time", raises=ValueError)
def _is_datetime(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parsed = parse_datetime(value)
    return parsed is not None


def parse_datetime(value: str) -> datetime | None:
    """An ISO 8601 date-time with a zone (Z or an offset); None for anything else."""
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
        # Times are stored in UTC: one that leaves years 1-9999 there (9999-12-31T23:00-12:00)
        # is as unusable as a malformed one.
        if parsed.tzinfo is not None:
            parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return None
    return parsed if parsed.tzinfo is not None else None


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def as_dict(self) -> dict:
        return {"field": self.field, "message": self.message}


def _label(schema: dict, field: str) -> str:
    return schema.get("x-label") or field.replace("_", " ").capitalize() or "This value"


def _message(error) -> Problem:
    path = [str(p) for p in error.absolute_path]
    field = ".".join(path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    label = _label(schema, path[-1] if path else "")
    hint = schema.get("x-hint")
    kind = error.validator
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        prop_schema = schema.get("properties", {}).get(missing, {})
        field = ".".join([*path, missing]) if missing else field
        return Problem(field, f"{_label(prop_schema, missing)} is required.")
    if kind == "additionalProperties":
        extras = sorted(set(error.instance) - set(schema.get("properties", {})))
        return Problem(field or (extras[0] if extras else ""),
                       f"Unknown field{'s' if len(extras) > 1 else ''}: {', '.join(extras)}.")
    if kind == "enum":
        choices = ", ".join(str(c) for c in error.validator_value)
        return Problem(field, f"{label} must be one of: {choices}.")
    if kind == "minLength" and error.validator_value == 1:
        return Problem(field, f"{label} is required.")
    if kind == "maxLength":
        return Problem(field, f"{label} is too long (at most {error.validator_value} characters).")
    if kind == "minLength":
        return Problem(field, f"{label} is too short (at least {error.validator_value} characters).")
    if kind in ("pattern", "format"):
        return Problem(field, f"{label} is not valid" + (f": {hint}." if hint else "."))
    if kind == "type":
        wanted = error.validator_value
        wanted = [wanted] if isinstance(wanted, str) else wanted
        words = {"integer": "a whole number", "number": "a number", "string": "text",
                 "object": "an object", "array": "a list", "null": "empty", "boolean": "yes or no"}
        return Problem(field, f"{label} must be {' or '.join(words.get(w, w) for w in wanted)}.")
    if kind == "minimum":
        return Problem(field, f"{label} must be at least {error.validator_value}.")
    if kind == "maximum":
        return Problem(field, f"{label} must be at most {error.validator_value}.")
    if kind == "minProperties":
        return Problem(field, "Nothing to change: give at least one field.")
    if kind == "maxItems":
        return Problem(field, f"{label} has too many entries (at most {error.validator_value}).")
    return Problem(field, f"{label} is not valid.")


def _rust_format(check):
    """A format check as jsonschema_rs calls it: a yes or no, never an exception."""
    def checked(value: str) -> bool:
        try:
            return bool(check(value))
        except Exception:  # a no sends the value to the full check below
            return False
    return checked


_RUST_FORMATS = {"date": _rust_format(_is_date), "date-time": _rust_format(_is_datetime)}


def _quick_validator(schema: dict):
    """A compiled (Rust) check of the same schema, or None where it cannot be built.

    Valid input is the common case and costs a few microseconds there instead of tens; its
    answer is trusted only when it says valid (see validate), so the messages, and what is
    refused, stay jsonschema's."""
    try:
        return jsonschema_rs.Draft202012Validator(
            schema, formats=_RUST_FORMATS, validate_formats=True, ignore_unknown_formats=True)
    except Exception:  # a schema it does not take is checked the slow way
        return None


# Keywords that apply a subschema somewhere other than a named property or every item: below
# one of them, any tuple of the instance is taken as one where an array may be asked for.
_OTHER_APPLICATORS = frozenset({
    "additionalProperties", "patternProperties", "propertyNames", "unevaluatedProperties",
    "prefixItems", "contains", "unevaluatedItems", "allOf", "anyOf", "oneOf", "not", "if",
    "then", "else", "dependentSchemas", "$ref", "$dynamicRef"})


def _tuple_finder(schema):
    """A test for a tuple where the schema may ask for an array, or None where it never can
    (jsonschema's const and enum already compare a tuple with a list as equal)."""
    if not isinstance(schema, dict):
        return None
    if any(key in _OTHER_APPLICATORS and not isinstance(value, bool)
           for key, value in schema.items()):
        return _holds_tuple
    kind = schema.get("type")
    may_be_array = kind is None or kind == "array" or (isinstance(kind, list) and "array" in kind)
    properties = [(name, found) for name, sub in (schema.get("properties") or {}).items()
                  if (found := _tuple_finder(sub)) is not None]
    items = _tuple_finder(schema.get("items"))
    if not (may_be_array or properties or items):
        return None

    def finds(instance) -> bool:
        if isinstance(instance, tuple):
            return may_be_array
        if isinstance(instance, dict):
            return any(found(instance[name]) for name, found in properties if name in instance)
        if isinstance(instance, list) and items is not None:
            return any(map(items, instance))
        return False
    return finds


def _holds_tuple(instance) -> bool:
    stack = [instance]
    while stack:
        value = stack.pop()
        if isinstance(value, tuple):
            return True
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


@dataclass(frozen=True)
class _Compiled:
    schema: dict
    full: Draft202012Validator
    quick: object
    # jsonschema_rs takes a tuple for an array, jsonschema does not: input with a tuple where
    # an array may be asked for (never JSON; a form's, maybe) takes the full check.
    tuple_finder: object


# Compiled validators by schema identity; the schema is kept with its validators so an id
# can never be reused by another object while its entry exists.
_VALIDATORS: dict[int, _Compiled] = {}


def _compiled(schema: dict) -> _Compiled:
    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached.schema is not schema:
        cached = _Compiled(schema, Draft202012Validator(schema, format_checker=FORMAT_CHECKER),
                           _quick_validator(schema), _tuple_finder(schema))
        _VALIDATORS[id(schema)] = cached
    return cached


def _quickly_valid(compiled: _Compiled, instance: object) -> bool:
    if compiled.quick is None or (compiled.tuple_finder and compiled.tuple_finder(instance)):
        return False
    try:
        return compiled.quick.is_valid(instance)
    except Exception:  # input it cannot read is left to jsonschema
        return False


def validate(schema: dict, instance: object) -> list[Problem]:
    compiled = _compiled(schema)
    # The quick check may refuse more than jsonschema (a pattern's "$" before a final newline,
    # say), never less: a refusal is looked at again, in full, for its messages.
    if _quickly_valid(compiled, instance):
        return []
    errors = sorted(compiled.full.iter_errors(instance),
                    key=lambda e: list(map(str, e.absolute_path)))
    problems: list[Problem] = []
    seen: set[str] = set()
    for error in errors:
        problem = _message(error)
        if problem.field not in seen:  # one message per field is enough to act on
            seen.add(problem.field)
            problems.append(problem)
    return problems
