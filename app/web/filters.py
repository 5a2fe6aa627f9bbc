"""Template filters shared with the service worker's Nunjucks (same names, same output).

Inputs are the plain values of template contexts: ISO strings for dates and times.
"""
from __future__ import annotations

from datetime import date, datetime, timezone

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _parse(value) -> datetime | date | None:
    if not value:
        return None
    if isinstance(value, (datetime, date)):
        return value
    text = str(value)
    try:
        if "T" in text:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc)
        return date.fromisoformat(text[:10])
    except ValueError:
        return None


def format_date(value) -> str:
    """21 Nov 2026"""
    moment = _parse(value)
    if moment is None:
        return ""
    return f"{moment.day} {MONTHS[moment.month - 1]} {moment.year}"


def format_datetime(value) -> str:
    """21 Nov 2026 10:04 (UTC; clinics read their own local time from the device later)"""
    moment = _parse(value)
    if not isinstance(moment, datetime):
        return format_date(value)
    return f"{format_date(moment)} {moment.hour:02d}:{moment.minute:02d}"


def format_time(value) -> str:
    moment = _parse(value)
    if not isinstance(moment, datetime):
        return ""
    return f"{moment.hour:02d}:{moment.minute:02d}"


def age(value, today: str | None = None) -> str:
    """Age in years, or months under two, or days under two months."""
    born = _parse(value)
    if born is None:
        return ""
    if isinstance(born, datetime):
        born = born.date()
    now = date.fromisoformat(today) if today else datetime.now(timezone.utc).date()
    months = (now.year - born.year) * 12 + now.month - born.month - (now.day < born.day)
    if months >= 24:
        return f"{months // 12} y"
    if months >= 2:
        return f"{months} mo"
    return f"{(now - born).days} d"


def number(value) -> str:
    """A measurement without a pointless trailing .0"""
    if value is None or value == "":
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


FILTERS = {"date": format_date, "datetime": format_datetime, "time": format_time, "age": age,
           "number": number}
