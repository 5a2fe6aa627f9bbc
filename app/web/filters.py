"""Template filters shared with the service worker's Nunjucks (same names, same output).

Inputs are the plain values of template contexts: ISO strings for dates and times. Their
JavaScript twins are in static/sw/filters.js; tests/domain/test_filters.py runs both on the
same inputs. So that the two can agree byte for byte, the accepted formats are spelled out
here rather than left to datetime.fromisoformat (whose grammar changes between Python
versions), and anything else is bad input, shown as "":

- a datetime: YYYY-MM-DDTHH:MM[:SS[.fraction]][Z|+HH:MM|-HH:MM], no offset meaning UTC;
- a date: any string without a "T" whose first ten characters are YYYY-MM-DD.

Everything is shown in UTC.
"""
from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta, timezone

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_DATETIME = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2})"
                       r"(?::([0-9]{2})(?:\.[0-9]+)?)?(Z|[+-][0-9]{2}:[0-9]{2})?")
_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")


def _zone(text: str | None) -> timezone | None:
    if text is None or text == "Z":
        return timezone.utc
    hours, minutes = int(text[1:3]), int(text[4:6])
    if hours > 23 or minutes > 59:
        return None
    return timezone((-1 if text[0] == "-" else 1) * timedelta(hours=hours, minutes=minutes))


def _parse(value) -> datetime | date | None:
    try:
        if isinstance(value, datetime):
            return (value.astimezone(timezone.utc) if value.tzinfo
                    else value.replace(tzinfo=timezone.utc))
        if isinstance(value, date):
            return value
        if not isinstance(value, str) or not value:
            return None
        if "T" in value:
            match = _DATETIME.fullmatch(value)
            if match is None:
                return None
            *fields, zone = match.groups()
            offset = _zone(zone)
            if offset is None:
                return None
            return datetime(*(int(f or 0) for f in fields), tzinfo=offset).astimezone(timezone.utc)
        match = _DATE.fullmatch(value[:10])
        return date(*(int(f) for f in match.groups())) if match else None
    except (ValueError, OverflowError):  # no such day or time, or out of datetime's range
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
    """Age in years, or months under two, or days under two months.

    `today` is YYYY-MM-DD (tests fix it); anything else raises ValueError."""
    born = _parse(value)
    if born is None:
        return ""
    if isinstance(born, datetime):
        born = born.date()
    if today:
        match = _DATE.fullmatch(today)
        if match is None:
            raise ValueError(f"today must be YYYY-MM-DD, not {today!r}")
        now = date(*(int(f) for f in match.groups()))
    else:
        now = datetime.now(timezone.utc).date()
    months = (now.year - born.year) * 12 + now.month - born.month - (now.day < born.day)
    if months >= 24:
        return f"{months // 12} y"
    if months >= 2:
        return f"{months} mo"
    return f"{(now - born).days} d"


def number(value) -> str:
    """A measurement without a pointless trailing .0; anything but a number or a string is ""."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value)


FILTERS = {"date": format_date, "datetime": format_datetime, "time": format_time, "age": age,
           "number": number}
