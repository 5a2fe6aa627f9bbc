"""How likely two registrations are the same person, for the check before creating one."""
from __future__ import annotations

import unicodedata
from difflib import SequenceMatcher


def normalise_name(name: str | None) -> str:
    decomposed = unicodedata.normalize("NFKD", name or "")
    return "".join(c for c in decomposed if c.isalnum()).casefold()


def normalise_phone(phone: str | None) -> str:
    return "".join(c for c in phone or "" if c.isdigit())[-9:]


def likeness(candidate: dict, other: dict) -> tuple[float, list[str]]:
    """A score from 0 to 1 and the reasons a person will be shown."""
    reasons: list[str] = []
    score = 0.0
    given = SequenceMatcher(None, normalise_name(candidate.get("given_name")),
                            normalise_name(other.get("given_name"))).ratio()
    family = SequenceMatcher(None, normalise_name(candidate.get("family_name")),
                             normalise_name(other.get("family_name"))).ratio()
    if given > 0.8 and family > 0.8:
        score += 0.45
        reasons.append("similar name")
    elif family > 0.85:
        score += 0.2
        reasons.append("same family name")
    if candidate.get("birth_date") and candidate.get("birth_date") == other.get("birth_date"):
        score += 0.35
        reasons.append("same date of birth")
    phone = normalise_phone(candidate.get("phone"))
    if len(phone) >= 6 and phone == normalise_phone(other.get("phone")):
        score += 0.4
        reasons.append("same phone number")
    ids = {(i.get("system"), i.get("value", "").strip().casefold())
           for i in candidate.get("identifiers") or []}
    if ids & {(i.get("system"), i.get("value", "").strip().casefold())
              for i in other.get("identifiers") or []}:
        score += 1.0
        reasons.append("same identifier")
    return min(score, 1.0), reasons


LIKELY_DUPLICATE_SCORE = 0.6
