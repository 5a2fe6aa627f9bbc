"""The registry of mutation types: each declared once, with its schema, roles and policy.

The same JSON Schemas are served to the browser, so a form is checked offline by
the rules the server applies.
"""
from __future__ import annotations

from dataclasses import dataclass

from app.domain import roles as r
from app.domain.ids import UUID_PATTERN
from app.domain.stations import STATIONS

APPEND = "append"
MERGE_FIELDS = "merge-fields"
VERSION = "version"
AUTHORITATIVE = "authoritative"
POLICIES = (APPEND, MERGE_FIELDS, VERSION, AUTHORITATIVE)

SEXES = ("female", "male", "other", "unknown")
IDENTIFIER_SYSTEMS = ("national-id", "mrn", "insurance", "passport", "other")
ROUTES = ("oral", "intravenous", "intramuscular", "subcutaneous", "topical", "inhaled", "rectal",
          "other")
CONSENT_SCOPES = ("treatment", "data-sharing", "procedure", "research")
SIGNER_RELATIONS = ("self", "parent", "guardian", "next-of-kin", "other")


def _text(label: str, max_length: int, min_length: int = 1) -> dict:
    return {"type": "string", "minLength": min_length, "maxLength": max_length, "x-label": label}


def _uuid(label: str) -> dict:
    return {"type": "string", "pattern": UUID_PATTERN, "x-label": label,
            "x-hint": "a record id (UUID)"}


def _enum(label: str, values: tuple[str, ...]) -> dict:
    return {"type": "string", "enum": list(values), "x-label": label}


def _date(label: str) -> dict:
    return {"type": "string", "format": "date", "x-label": label, "x-hint": "use YYYY-MM-DD"}


def _datetime(label: str) -> dict:
    return {"type": "string", "format": "date-time", "x-label": label,
            "x-hint": "use a date and time such as 2026-11-21T10:04:00Z"}


def _optional(schema: dict) -> dict:
    return {**schema, "type": [schema["type"], "null"]}


def _object(required: dict, optional: dict | None = None, min_properties: int = 0) -> dict:
    properties = {**required, **(optional or {})}
    schema = {"type": "object", "properties": properties, "required": list(required),
              "additionalProperties": False}
    if min_properties:
        schema["minProperties"] = min_properties
    return schema


DEMOGRAPHICS = {
    "given_name": _text("Given name", 100),
    "family_name": _text("Family name", 100),
    "sex": _enum("Sex", SEXES),
    "birth_date": _date("Date of birth"),
    "phone": _optional({**_text("Phone", 40, 0), "pattern": r"^[0-9+()\- ]*$",
                        "x-hint": "digits, spaces, +, - and brackets only"}),
    "address": _optional(_text("Address", 300, 0)),
}
IDENTIFIER = _object({"system": _enum("Identifier type", IDENTIFIER_SYSTEMS),
                      "value": _text("Identifier", 100)})


@dataclass(frozen=True)
class MutationType:
    name: str
    entity: str
    policy: str
    creates: bool
    roles: frozenset[str]
    schema: dict
    label: str


def _type(name, entity, policy, creates, roles, schema, label) -> MutationType:
    return MutationType(name, entity, policy, creates, frozenset(roles), schema, label)


FRONT_DESK = (r.REGISTRATION_CLERK, r.NURSE, r.CLINICIAN)
ALL_CLINICAL = tuple(sorted(r.CLINICAL_ROLES))
NOTE_WRITERS = (r.NURSE, r.CLINICIAN, r.LAB, r.PHARMACIST)

MUTATION_TYPES: dict[str, MutationType] = {t.name: t for t in (
    _type("patient.register", "patient", APPEND, True, FRONT_DESK, _object(
        {k: DEMOGRAPHICS[k] for k in ("given_name", "family_name", "sex", "birth_date")}
        | {"clinic_id": _uuid("Clinic")},
        {"phone": DEMOGRAPHICS["phone"], "address": DEMOGRAPHICS["address"],
         "identifiers": {"type": "array", "items": IDENTIFIER, "maxItems": 10,
                         "x-label": "Identifiers"}}),
        "Register a patient"),
    _type("patient.update", "patient", MERGE_FIELDS, False, FRONT_DESK,
          _object({}, DEMOGRAPHICS, min_properties=1), "Update demographics"),
    _type("patient.identifier.add", "patient_identifier", APPEND, True, FRONT_DESK,
          _object({"patient_id": _uuid("Patient"), **IDENTIFIER["properties"]}),
          "Add an identifier"),
    _type("patient.identifier.retire", "patient_identifier", VERSION, False, FRONT_DESK,
          _object({}, {"reason": _text("Reason", 200, 0)}), "Retire an identifier"),
    _type("visit.start", "visit", APPEND, True, FRONT_DESK, _object(
        {"patient_id": _uuid("Patient"), "clinic_id": _uuid("Clinic"),
         "station": _enum("Station", STATIONS[:-1])},
        {"reason": _optional(_text("Reason for visit", 300, 0))}), "Start a visit"),
    _type("visit.move", "visit", VERSION, False, ALL_CLINICAL,
          _object({"station": _enum("Station", STATIONS)}), "Move a visit"),
    _type("observation.record", "observation", APPEND, True, (r.NURSE, r.CLINICIAN, r.LAB),
          _object({"patient_id": _uuid("Patient"), "code": _text("Code", 20),
                   "value": {"type": ["number", "string"], "x-label": "Value", "maxLength": 200},
                   "unit": _text("Unit", 20), "effective_at": _datetime("Time taken")},
                  {"visit_id": _optional(_uuid("Visit"))}), "Record an observation"),
    _type("condition.add", "condition", APPEND, True, (r.CLINICIAN,), _object(
        {"patient_id": _uuid("Patient"), "text": _text("Diagnosis", 300)},
        {"code": _optional(_text("ICD-10 code", 20, 0)), "onset_date": _optional(_date("Onset")),
         "visit_id": _optional(_uuid("Visit"))}), "Add a diagnosis"),
    _type("condition.resolve", "condition", VERSION, False, (r.CLINICIAN,), _object({}),
          "Resolve a diagnosis"),
    _type("note.write", "note", APPEND, True, NOTE_WRITERS, _object(
        {"patient_id": _uuid("Patient"), "text": _text("Note", 20000)},
        {"visit_id": _optional(_uuid("Visit"))}), "Write a note"),
    _type("note.edit", "note", MERGE_FIELDS, False, NOTE_WRITERS,
          _object({"text": _text("Note", 20000)}), "Edit a draft note"),
    _type("note.sign", "note", VERSION, False, NOTE_WRITERS, _object({}), "Sign a note"),
    _type("note.amend", "note_addendum", APPEND, True, NOTE_WRITERS, _object(
        {"note_id": _uuid("Note"), "text": _text("Amendment", 20000)}), "Amend a signed note"),
    _type("medication.order", "medication_request", APPEND, True, (r.CLINICIAN,), _object(
        {"patient_id": _uuid("Patient"), "medication": _text("Medication", 200),
         "dose": _text("Dose", 100), "route": _enum("Route", ROUTES),
         "frequency": _text("Frequency", 100),
         "quantity": {"type": "integer", "minimum": 1, "maximum": 10000, "x-label": "Quantity"}},
        {"duration_days": _optional({"type": "integer", "minimum": 1, "maximum": 3650,
                                     "x-label": "Duration (days)"}),
         "visit_id": _optional(_uuid("Visit"))}), "Order a medication"),
    _type("medication.dispense", "medication_dispense", AUTHORITATIVE, True, (r.PHARMACIST,),
          _object({"request_id": _uuid("Medication order"),
                   "quantity": {"type": "integer", "minimum": 1, "maximum": 10000,
                                "x-label": "Quantity"}}), "Dispense a medication"),
    _type("appointment.book", "appointment", AUTHORITATIVE, True, FRONT_DESK, _object(
        {"patient_id": _uuid("Patient"), "starts_at": _datetime("Appointment time")},
        {"reason": _optional(_text("Reason", 300, 0)), "clinic_id": _uuid("Clinic")}),
        "Book an appointment"),
    _type("appointment.cancel", "appointment", VERSION, False, FRONT_DESK,
          _object({}, {"reason": _optional(_text("Reason", 300, 0))}), "Cancel an appointment"),
    _type("consent.record", "consent", APPEND, True, FRONT_DESK, _object(
        {"patient_id": _uuid("Patient"), "scope": _enum("Consent for", CONSENT_SCOPES),
         "signer_name": _text("Signed by", 200),
         "signer_relation": _enum("Signer is", SIGNER_RELATIONS),
         "signature_png": {"type": "string", "pattern": "^data:image/png;base64,",
                           "maxLength": 400_000, "x-label": "Signature",
                           "x-hint": "sign in the box"}},
        {"signed_at": _datetime("Signed at"), "visit_id": _optional(_uuid("Visit"))}),
        "Record a signed consent"),
)}


ENVELOPE_SCHEMA = {
    "type": "object",
    "required": ["mid", "type", "entity", "entity_id", "data"],
    "properties": {
        "mid": _uuid("Mutation id"),
        "seq": {"type": "integer", "minimum": 1, "x-label": "Sequence number"},
        "type": {"type": "string", "enum": sorted(MUTATION_TYPES), "x-label": "Mutation type"},
        "entity": {"type": "string", "maxLength": 40, "x-label": "Entity"},
        "entity_id": _uuid("Record id"),
        "base_version": {"type": ["integer", "null"], "minimum": 1, "x-label": "Base version"},
        "base": {"type": ["object", "null"], "x-label": "Base values"},
        "data": {"type": "object", "x-label": "Data"},
        "deps": {"type": "array", "items": _uuid("Dependency"), "maxItems": 100,
                 "x-label": "Dependencies"},
        "client_ts": {"type": ["string", "null"], "maxLength": 40, "x-label": "Client time"},
        # Accepted and ignored: the author is always the authenticated user.
        "author": {"type": ["string", "null"], "maxLength": 200, "x-label": "Author"},
    },
    "additionalProperties": False,
}


def schemas_for_browser() -> dict:
    """Every schema the client needs to check a form the way the server will."""
    return {
        "envelope": ENVELOPE_SCHEMA,
        "types": {name: {"entity": t.entity, "policy": t.policy, "creates": t.creates,
                         "roles": sorted(t.roles), "schema": t.schema, "label": t.label}
                  for name, t in MUTATION_TYPES.items()},
    }
