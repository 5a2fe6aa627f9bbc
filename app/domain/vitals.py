"""Vital signs by LOINC code, with the units and plausible ranges the forms accept."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Vital:
    code: str
    field: str
    label: str
    unit: str
    minimum: float
    maximum: float
    step: str


VITALS = (
    Vital("8867-4", "heart_rate", "Heart rate", "/min", 20, 250, "1"),
    Vital("9279-1", "respiratory_rate", "Respiratory rate", "/min", 4, 80, "1"),
    Vital("8310-5", "temperature", "Temperature", "Cel", 30, 45, "0.1"),
    Vital("59408-5", "spo2", "Oxygen saturation", "%", 50, 100, "1"),
    Vital("8480-6", "systolic", "Systolic blood pressure", "mm[Hg]", 50, 260, "1"),
    Vital("8462-4", "diastolic", "Diastolic blood pressure", "mm[Hg]", 20, 160, "1"),
    Vital("29463-7", "weight", "Weight", "kg", 0.3, 350, "0.1"),
    Vital("8302-2", "height", "Height", "cm", 20, 250, "0.1"),
)
VITALS_BY_CODE = {v.code: v for v in VITALS}
VITALS_BY_FIELD = {v.field: v for v in VITALS}


def plausibility_problem(code: str, value: object, unit: str) -> str | None:
    vital = VITALS_BY_CODE.get(code)
    if vital is None:
        return None
    if unit != vital.unit:
        return f"{vital.label} is recorded in {vital.unit}, not {unit}."
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{vital.label} must be a number."
    if not vital.minimum <= value <= vital.maximum:
        return (f"{vital.label} of {value:g} {vital.unit} is outside the range this form accepts "
                f"({vital.minimum:g}–{vital.maximum:g}). Check the reading.")
    return None
