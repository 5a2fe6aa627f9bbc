"""The stations a visit passes through."""
from __future__ import annotations

STATIONS = ("registration", "triage", "consultation", "lab", "pharmacy", "done")
ACTIVE_STATIONS = STATIONS[:-1]
STATION_LABELS = {
    "registration": "Registration",
    "triage": "Triage",
    "consultation": "Consultation",
    "lab": "Lab",
    "pharmacy": "Pharmacy",
    "done": "Done",
}


def next_stations(current: str) -> list[str]:
    """Where a visit may be sent from here, most usual first."""
    order = list(STATIONS)
    later = order[order.index(current) + 1:] if current in order else order
    earlier = [s for s in order if s not in later and s != current]
    return later + earlier
