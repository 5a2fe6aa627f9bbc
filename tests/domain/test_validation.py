"""Validation messages name the field and say what to do (app/domain/validation.py)."""
from __future__ import annotations

from app.domain.mutations import MUTATION_TYPES
from app.domain.validation import parse_datetime, validate

REGISTER = MUTATION_TYPES["patient.register"].schema
UPDATE = MUTATION_TYPES["patient.update"].schema
OBSERVATION = MUTATION_TYPES["observation.record"].schema
ORDER = MUTATION_TYPES["medication.order"].schema
CLINIC = "0190f5a0-0000-7000-8000-000000000001"
# Kept at module level: validate() caches compiled validators by the schema object.
PIN_SCHEMA = {"type": "object", "properties": {
    "pin": {"type": "string", "minLength": 4, "x-label": "PIN"},
    "blood_group": {"type": "string", "maxLength": 3}}}


def problems(schema, data) -> dict:
    return {p.field: p.message for p in validate(schema, data)}


def valid_registration(**changes) -> dict:
    return {"given_name": "Amina", "family_name": "Odhiambo", "sex": "female",
            "birth_date": "1990-03-04", "clinic_id": CLINIC, **changes}


def test_valid_registration_has_no_problems():
    assert validate(REGISTER, valid_registration(phone="+254 (0) 712-345")) == []


def test_missing_required_field_names_it_by_its_label():
    data = valid_registration()
    del data["family_name"]
    assert problems(REGISTER, data) == {"family_name": "Family name is required."}


def test_blank_required_text_reads_as_required():
    assert problems(REGISTER, valid_registration(given_name="")) == {
        "given_name": "Given name is required."}


def test_enum_lists_the_choices():
    assert problems(REGISTER, valid_registration(sex="dragon")) == {
        "sex": "Sex must be one of: female, male, other, unknown."}


def test_bad_date_gives_the_expected_format():
    for bad in ("04/03/1990", "1990-3-4", "1990-02-30"):
        assert problems(REGISTER, valid_registration(birth_date=bad)) == {
            "birth_date": "Date of birth is not valid: use YYYY-MM-DD."}, bad


def test_phone_pattern_explains_what_is_allowed():
    assert problems(REGISTER, valid_registration(phone="call me")) == {
        "phone": "Phone is not valid: digits, spaces, +, - and brackets only."}


def test_too_long_text_gives_the_limit():
    assert problems(REGISTER, valid_registration(given_name="x" * 101)) == {
        "given_name": "Given name is too long (at most 100 characters)."}


def test_too_short_text_gives_the_minimum():
    assert problems(PIN_SCHEMA, {"pin": "12"}) == {"pin": "PIN is too short (at least 4 characters)."}


def test_field_without_label_is_named_from_its_key():
    assert problems(PIN_SCHEMA, {"blood_group": "ABCD"}) == {
        "blood_group": "Blood group is too long (at most 3 characters)."}


def test_unknown_field_is_named():
    assert problems(REGISTER, valid_registration(nickname="Mimi")) == {
        "nickname": "Unknown field: nickname."}


def test_nested_identifier_problems_carry_their_path():
    data = valid_registration(identifiers=[{"system": "national-id", "value": "1"},
                                           {"system": "passport"}])
    assert problems(REGISTER, data) == {"identifiers.1.value": "Identifier is required."}
    too_many = valid_registration(identifiers=[{"system": "mrn", "value": str(n)} for n in range(11)])
    assert problems(REGISTER, too_many) == {
        "identifiers": "Identifiers has too many entries (at most 10)."}


def test_each_broken_field_gets_its_own_message_once():
    found = problems(REGISTER, {"given_name": "", "sex": "x", "birth_date": "soon",
                                "clinic_id": "not-a-uuid"})
    assert set(found) == {"given_name", "family_name", "sex", "birth_date", "clinic_id"}
    assert found["clinic_id"] == "Clinic is not valid: a record id (UUID)."


def test_number_type_and_range_messages():
    order = {"patient_id": CLINIC, "medication": "Amoxicillin", "dose": "1", "route": "oral",
             "frequency": "daily"}
    assert problems(ORDER, {**order, "quantity": "ten"}) == {
        "quantity": "Quantity must be a whole number."}
    assert problems(ORDER, {**order, "quantity": 0}) == {"quantity": "Quantity must be at least 1."}
    assert problems(ORDER, {**order, "quantity": 10001}) == {
        "quantity": "Quantity must be at most 10000."}
    assert problems(ORDER, {**order, "quantity": 5, "duration_days": 2.5}) == {
        "duration_days": "Duration (days) must be a whole number or empty."}


def test_value_of_several_types_lists_them():
    data = {"patient_id": CLINIC, "code": "8867-4", "value": [80], "unit": "/min",
            "effective_at": "2026-01-01T10:00:00Z"}
    assert problems(OBSERVATION, data) == {"value": "Value must be a number or text."}


def test_date_time_needs_a_zone():
    data = {"patient_id": CLINIC, "code": "8867-4", "value": 80, "unit": "/min",
            "effective_at": "2026-01-01T10:00:00"}
    assert problems(OBSERVATION, data) == {
        "effective_at": "Time taken is not valid: use a date and time such as 2026-11-21T10:04:00Z."}
    assert problems(OBSERVATION, {**data, "effective_at": "2026-01-01T10:00:00+03:00"}) == {}


def test_empty_update_says_nothing_to_change():
    assert problems(UPDATE, {}) == {"": "Nothing to change: give at least one field."}


def test_parse_datetime():
    assert parse_datetime("2026-11-21T10:04:00Z").isoformat() == "2026-11-21T10:04:00+00:00"
    assert parse_datetime("2026-11-21T13:04:00+03:00").utcoffset().total_seconds() == 3 * 3600
    assert parse_datetime("2026-11-21T10:04:00") is None
    assert parse_datetime("2026-11-21") is None
    assert parse_datetime("not a time") is None
    assert parse_datetime(None) is None


def agrees_with_jsonschema(schema, data) -> bool:
    from jsonschema import Draft202012Validator

    from app.domain.validation import FORMAT_CHECKER
    full = Draft202012Validator(schema, format_checker=FORMAT_CHECKER)
    return (validate(schema, data) == []) == full.is_valid(data)


def test_the_compiled_check_refuses_nothing_jsonschema_accepts_and_accepts_nothing_it_refuses():
    """validate() answers valid input from a compiled check; where that check and jsonschema
    read a value differently, jsonschema's answer is the one given."""
    observation = {"patient_id": CLINIC, "code": "8867-4", "value": 80, "unit": "/min",
                   "effective_at": "2026-01-01T10:00:00Z"}
    order = {"patient_id": CLINIC, "medication": "A", "dose": "1", "route": "oral",
             "frequency": "daily"}
    cases = [
        (UPDATE, {"phone": "0712 345\n"}),  # Python's "$" matches before a final newline
        (OBSERVATION, {**observation, "patient_id": CLINIC + "\n"}),
        (ORDER, {**order, "quantity": 2.0}),
        (ORDER, {**order, "quantity": True}),
        (OBSERVATION, {**observation, "value": 10**30}),
        (OBSERVATION, {**observation, "value": float("nan")}),
        (OBSERVATION, {**observation, "code": "\ud800"}),
        (OBSERVATION, {**observation, "effective_at": "9999-12-31T23:00:00-12:00"}),
        (REGISTER, valid_registration(identifiers=({"system": "mrn", "value": "1"},))),
        (REGISTER, valid_registration(identifiers=[{"system": "mrn", "value": "1"}])),
    ]
    for schema, data in cases:
        assert agrees_with_jsonschema(schema, data), data


# Where a schema may ask for an array, a tuple (which no JSON holds,
# a form's values might) is not one for jsonschema, and so not for validate().
TUPLE_CASES = [
    ({"type": "object", "properties": {"tags": {"type": "array"}}}, {"tags": ("a",)}),
    ({"type": "object", "properties": {"tags": {"not": {"maxItems": 0}}}}, {"tags": ("a",)}),
    ({"type": "object", "additionalProperties": {"type": "array"}}, {"any": (1,)}),
    ({"type": "array", "items": {"type": "array"}}, [[1], (2,)]),
]


def test_a_tuple_is_not_a_list_wherever_the_schema_may_ask_for_one():
    for schema, data in TUPLE_CASES:
        assert agrees_with_jsonschema(schema, data), (schema, data)
