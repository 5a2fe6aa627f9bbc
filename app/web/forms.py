"""Reading form posts into mutation data, and turning rejections back into field errors."""
from __future__ import annotations

from flask import abort, flash, request
from flask_login import current_user

from app.domain import roles
from app.extensions import db
from app.models import Patient
from app.services.results import Result
from app.services.scope import patient_visible
from app.web import break_glass


def text(name: str) -> str | None:
    value = request.form.get(name, "").strip()
    return value or None


def pick(*names: str, required: tuple[str, ...] = ()) -> dict:
    """Form fields named like the mutation's data fields; blank optional ones are left out."""
    data = {}
    for name in names:
        value = text(name)
        if value is not None or name in required:
            data[name] = value if value is not None else ""
    return data


def integer(name: str):
    value = text(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value  # the schema names the field and says it must be a whole number


def number(name: str):
    value = text(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def errors_of(*results: Result) -> dict:
    """{field: message} for the form, plus '_form' for a problem no field owns."""
    errors: dict[str, str] = {}
    for result in results:
        if result.status != "rejected":
            continue
        problems = result.error.get("problems") or []
        for problem in problems:
            errors.setdefault(problem["field"].split(".")[0] or "_form", problem["message"])
        if not problems:
            errors.setdefault("_form", result.error["message"])
    return errors


def visible_patient_or_404(patient_id: str, offer_break_glass: bool = False) -> Patient:
    """A patient of this clinic, or one the clinician opened with break-glass (read pages
    only). Otherwise 404; `offer_break_glass` puts the emergency access form on that page."""
    if not patient_visible(patient_id, current_user.clinic_id) \
            and break_glass.grant_in_use(patient_id) is None:
        if offer_break_glass and roles.can_break_glass(current_user.roles):
            abort(break_glass.refused_page(patient_id))
        abort(404)
    return db.session.get(Patient, patient_id)


def flash_result(result: Result, success: str) -> None:
    if result.status == "rejected":
        flash(result.error["message"], "error")
    elif result.status == "conflict":
        flash("Someone else changed this record first. Nothing was lost: your change waits on "
              "the review list.", "warning")
    else:
        flash(success, "success")
