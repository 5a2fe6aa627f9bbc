"""The service worker's twins of server code give the same answers for the same input.

Mutation ids derived from a form's token, schema checks and their messages, the phone
normalisation behind search and the vital-sign trend lines are each written twice, in Python
for the server and in JavaScript for the worker; these tests hold the two together.
"""
from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from app.contexts.chart import trend_points
from app.domain.duplicates import normalise_phone
from app.domain.ids import derived_id, new_id
from app.domain.mutations import MUTATION_TYPES
from app.domain.validation import validate
from app.services.handlers.patients import check_birth_date
from app.services.results import Rejection
from app.domain.vitals import VITALS, plausibility_problem
from tests.js_bridge import call_js

PATIENT = "0190b6f2-1c3a-7a00-8f00-00000000000a"

VALID = {
    "patient.register": {"given_name": "Amina", "family_name": "Okafor", "sex": "female",
                         "birth_date": "1990-02-03", "clinic_id": PATIENT, "phone": "+254 700 000",
                         "identifiers": [{"system": "mrn", "value": "A-1"}]},
    "patient.update": {"phone": "0700 111 222", "address": None},
    "visit.start": {"patient_id": PATIENT, "clinic_id": PATIENT, "station": "triage"},
    "visit.move": {"station": "done"},
    "observation.record": {"patient_id": PATIENT, "code": "8310-5", "value": 37.5, "unit": "Cel",
                           "effective_at": "2026-11-21T10:04:00.123Z"},
    "note.write": {"patient_id": PATIENT, "text": "Seen."},
    "appointment.book": {"patient_id": PATIENT, "clinic_id": PATIENT,
                         "starts_at": "2026-11-22T09:30:00+03:00"},
    "medication.order": {"patient_id": PATIENT, "medication": "Amoxicillin", "dose": "500 mg",
                         "route": "oral", "frequency": "3 times a day", "quantity": 21},
}


def _variants():
    """Valid data and the ways a form gets it wrong."""
    cases = []
    for type_name, data in VALID.items():
        schema = MUTATION_TYPES[type_name].schema
        cases.append((type_name, data))
        for field, prop in schema["properties"].items():
            broken = copy.deepcopy(data)
            if field in schema.get("required", []):
                cases.append((type_name, {k: v for k, v in broken.items() if k != field}))
            kinds = prop["type"] if isinstance(prop.get("type"), list) else [prop.get("type")]
            if "string" in kinds:
                cases.append((type_name, {**broken, field: ""}))
                cases.append((type_name, {**broken, field: "x" * (prop.get("maxLength", 50) + 1)}))
                cases.append((type_name, {**broken, field: 12}))
                cases.append((type_name, {**broken, field: "2026-02-30"}))
                cases.append((type_name, {**broken, field: "2026-11-21T25:00:00Z"}))
                cases.append((type_name, {**broken, field: "abc\u00e9"}))
            if "integer" in kinds or "number" in kinds:
                cases.append((type_name, {**broken, field: -5}))
                cases.append((type_name, {**broken, field: 10**9}))
                cases.append((type_name, {**broken, field: "seven"}))
                cases.append((type_name, {**broken, field: 2.5}))
        cases.append((type_name, {**data, "surprise": 1}))
        cases.append((type_name, {}))
    return cases


def test_schema_checks_and_messages_match_the_server():
    cases = _variants()
    expected = [[p.as_dict() for p in validate(MUTATION_TYPES[t].schema, d)] for t, d in cases]
    got = call_js("static/sw/validate.js",
                  [("validate", [MUTATION_TYPES[t].schema, d]) for t, d in cases])
    mismatches = [(t, d, e, g) for (t, d), e, g in zip(cases, expected, got) if e != g]
    assert not mismatches, "\n".join(f"{t} {d!r}\n  server: {e}\n  worker: {g}"
                                     for t, d, e, g in mismatches[:10])
    assert any(expected), "the fixtures must include data the server refuses"


def test_form_mutation_ids_match_the_server():
    names = ["/patients/new#", "/patients/new#entity", f"/patients/{PATIENT}/vitals#id-8310-5",
             "/notes/x/edit#é ü 中"]
    parents = [new_id() for _ in range(3)]
    calls = [("derivedId", [p, n]) for p in parents for n in names]
    assert call_js("static/sw/ids.js", calls) == [derived_id(p, n) for p in parents for n in names]


def test_new_ids_are_version_7_and_sort_by_time():
    first, second = call_js("static/sw/ids.js", [("newId", []), ("newId", [])])
    assert first[14] == second[14] == "7"
    assert first[:8] <= second[:8]


@pytest.mark.parametrize("values", [
    [36.5, 37.0], [120, 118, 135, 128, 122], [1, 1, 1], [0.0625 * i for i in range(12)],
    [5, 4.75, 4.5, 4.25, 4, 3.75, 3.5, 3.25, 3, 2.75, 2.5, 2.25, 2], [60.3, 61.7, 59.9, 64.2],
    [7], [],
])
def test_trend_lines_match_the_server(values):
    [line] = call_js("static/sw/contexts.js", [("trendPoints", [values])])
    assert line == trend_points(values)


def test_vital_sign_range_checks_match_the_server():
    vitals = [{"field": v.field, "label": v.label, "unit": v.unit, "code": v.code,
               "min": v.minimum, "max": v.maximum, "step": v.step} for v in VITALS]
    cases = [(v.code, value, v.unit) for v in VITALS
             for value in (v.minimum, v.maximum, v.minimum - 0.1, v.maximum + 1, 73, 1e7, -0.00001, "high")]
    cases += [("8310-5", 37, "F"), ("unknown", 5, "x")]
    got = call_js("static/sw/forms.js", [("plausibilityProblem", [vitals, *case]) for case in cases])
    assert got == [plausibility_problem(*case) for case in cases]
    assert any(got)


@pytest.mark.parametrize("born", ["2026-11-21", "2026-11-22", "2030-01-01", "1896-01-01", "1895-12-31",
                                  "1990-02-03", "garbage"])
def test_birth_date_checks_match_the_server(born, monkeypatch):
    today = "2026-11-21"
    monkeypatch.setattr("app.services.handlers.patients.utcnow",
                        lambda: datetime(2026, 11, 21, 12, tzinfo=timezone.utc))
    try:
        check_birth_date(born)
        expected = None
    except Rejection as rejection:
        expected = rejection.message
    except ValueError:
        expected = None  # not a date: the schema reports it
    [got] = call_js("static/sw/forms.js", [("birthDateProblem", [born, today])])
    assert got == expected


def test_phone_normalisation_matches_the_server():
    phones = ["+254 700 123 456", "0700-123-456", "(01) 234", "", None, "abc"]
    assert call_js("static/sw/contexts.js", [("normalisePhone", [p]) for p in phones]) == \
        [normalise_phone(p) for p in phones]
