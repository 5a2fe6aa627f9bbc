"""Template filters shared with the service worker's Nunjucks (app/web/filters.py)."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from app.web.filters import FILTERS, age, format_date, format_datetime, format_time, number


def test_filters_are_registered_under_the_names_templates_use():
    assert set(FILTERS) == {"date", "datetime", "time", "age", "number"}


@pytest.mark.parametrize("value, shown", [
    ("2026-11-21", "21 Nov 2026"),
    ("2026-01-05", "5 Jan 2026"),
    ("2026-11-21T10:04:00Z", "21 Nov 2026"),
    (date(2026, 12, 31), "31 Dec 2026"),
    (None, ""),
    ("", ""),
    ("not a date", ""),
])
def test_date(value, shown):
    assert format_date(value) == shown


@pytest.mark.parametrize("value, shown", [
    ("2026-11-21T10:04:00Z", "21 Nov 2026 10:04"),
    ("2026-11-21T13:04:00+03:00", "21 Nov 2026 10:04"),   # shown in UTC
    ("2026-01-01T01:30:00+03:00", "31 Dec 2025 22:30"),   # the UTC day, not the local one
    (datetime(2026, 3, 9, 7, 5, tzinfo=timezone.utc), "9 Mar 2026 07:05"),
    ("2026-11-21", "21 Nov 2026"),                        # a plain date has no time to show
    (None, ""),
    ("garbage", ""),
])
def test_datetime(value, shown):
    assert format_datetime(value) == shown


def test_time():
    assert format_time("2026-11-21T09:07:00Z") == "09:07"
    assert format_time("2026-11-21") == ""
    assert format_time(None) == ""


@pytest.mark.parametrize("born, today, shown", [
    ("2000-05-17", "2026-05-16", "25 y"),   # the day before the birthday
    ("2000-05-17", "2026-05-17", "26 y"),   # on the birthday
    ("2024-05-17", "2026-05-17", "2 y"),
    ("2024-05-18", "2026-05-17", "23 mo"),
    ("2025-01-31", "2026-01-30", "11 mo"),
    ("2026-03-01", "2026-05-01", "2 mo"),
    ("2026-03-02", "2026-05-01", "60 d"),
    ("2026-05-17", "2026-05-17", "0 d"),
    ("2024-02-29", "2026-02-28", "23 mo"),  # leap-day birthday
    ("2000-05-17T23:00:00Z", "2026-05-17", "26 y"),
])
def test_age_with_a_fixed_today(born, today, shown):
    assert age(born, today=today) == shown


def test_age_of_nothing_is_blank():
    assert age(None, today="2026-05-17") == ""
    assert age("unknown", today="2026-05-17") == ""


@pytest.mark.parametrize("value, shown", [
    (80.0, "80"), (36.6, "36.6"), (0.0, "0"), (72, "72"), ("5.5", "5.5"), (None, ""), ("", ""),
])
def test_number(value, shown):
    assert number(value) == shown
