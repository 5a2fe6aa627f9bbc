"""Template filters shared with the service worker's Nunjucks (app/web/filters.py), and their
JavaScript twins (static/sw/filters.js), which must give the same output for the same input."""
from __future__ import annotations

import random
from datetime import date, datetime, timezone

import pytest

from app.web.filters import FILTERS, age, format_date, format_datetime, format_time, number
from tests.js_bridge import call_js

DATES = [
    ("2026-11-21", "21 Nov 2026"),
    ("2026-01-05", "5 Jan 2026"),
    ("2026-11-21T10:04:00Z", "21 Nov 2026"),
    (date(2026, 12, 31), "31 Dec 2026"),
    (None, ""),
    ("", ""),
    ("not a date", ""),
    ("2026-11-21 10:04:00", "21 Nov 2026"),              # the first ten characters are the date
    ("2024-02-29", "29 Feb 2024"),
    ("2026-02-29", ""),                                  # no such day
    ("0000-01-01", ""),
    ("20261121", ""),                                    # only YYYY-MM-DD
    ("2026-W47-6", ""),
    ("2026-11-21T10:04:00+14:00", "20 Nov 2026"),        # the UTC day
]
DATETIMES = [
    ("2026-11-21T10:04:00Z", "21 Nov 2026 10:04"),
    ("2026-11-21T13:04:00+03:00", "21 Nov 2026 10:04"),   # shown in UTC
    ("2026-01-01T01:30:00+03:00", "31 Dec 2025 22:30"),   # the UTC day, not the local one
    (datetime(2026, 3, 9, 7, 5, tzinfo=timezone.utc), "9 Mar 2026 07:05"),
    ("2026-11-21", "21 Nov 2026"),                        # a plain date has no time to show
    (None, ""),
    ("garbage", ""),
    ("2026-11-21T10:04", "21 Nov 2026 10:04"),
    ("2026-11-21T10:04:59.999999Z", "21 Nov 2026 10:04"), # never rounded up
    ("2026-11-21T10:04:00.123456789-00:30", "21 Nov 2026 10:34"),
    ("2026-11-21T10:04:00", "21 Nov 2026 10:04"),         # no offset: UTC, not the server's zone
    ("2026-11-21T24:00:00Z", ""),
    ("2026-11-21T10:04:60Z", ""),
    ("2026-11-21T10:04:00+24:00", ""),
    ("2026-11-21T10:04:00+05:60", ""),
    ("2026-11-21T10:04:00+0300", ""),
    ("2026-11-21T10:04:00z", ""),
    ("0001-01-01T00:30:00+01:00", ""),                    # before the first representable day
    ("9999-12-31T23:30:00-01:00", ""),                    # after the last
    ("2026-11-21 Tuesday", ""),                           # a "T": read as a datetime, and not one
]
TIMES = [("2026-11-21T09:07:00Z", "09:07"), ("2026-11-21", ""), (None, ""),
         ("2026-11-21T23:59:00-00:01", "00:00")]
TODAY = "2026-05-17"
AGES = [
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
    ("2000-05-17T23:00:00-02:00", "2026-05-17", "25 y"),  # born on the 18th, UTC
    ("2026-06-01", "2026-05-17", "-15 d"),  # a birth date in the future
    ("1900-01-01", "2026-05-17", "126 y"),
    (None, TODAY, ""),
    ("unknown", TODAY, ""),
]
NUMBERS = [
    (80.0, "80"), (36.6, "36.6"), (0.0, "0"), (72, "72"), ("5.5", "5.5"), (None, ""), ("", ""),
    (-0.0, "0"), (-36.6, "-36.6"), (0.1 + 0.2, "0.30000000000000004"), (1e16, "10000000000000000"),
    (1e22, "10000000000000000000000"), (123456789.125, "123456789.125"), (0.0001, "0.0001"),
    (1e-05, "1e-05"), (1.5e-07, "1.5e-07"), (-2.5e-300, "-2.5e-300"), (True, ""), (False, ""),
    ([1], ""), ({"a": 1}, ""), ("abc", "abc"), (float("nan"), ""), (float("inf"), ""),
]


@pytest.mark.parametrize("value, shown", DATES)
def test_date(value, shown):
    assert format_date(value) == shown


@pytest.mark.parametrize("value, shown", DATETIMES)
def test_datetime(value, shown):
    assert format_datetime(value) == shown


@pytest.mark.parametrize("value, shown", TIMES)
def test_time(value, shown):
    assert format_time(value) == shown


@pytest.mark.parametrize("born, today, shown", AGES)
def test_age_with_a_fixed_today(born, today, shown):
    assert age(born, today=today) == shown


def test_age_needs_today_as_a_plain_date():
    with pytest.raises(ValueError):
        age("2000-01-01", today="20260517")


@pytest.mark.parametrize("value, shown", NUMBERS)
def test_number(value, shown):
    assert number(value) == shown


def test_filters_are_registered_under_the_names_templates_use():
    assert set(FILTERS) == {"date", "datetime", "time", "age", "number"}


# The JavaScript twins --------------------------------------------------------------------------

JS_NAMES = {format_date: "formatDate", format_datetime: "formatDatetime",
            format_time: "formatTime", age: "age", number: "number"}


def _json_value(value) -> bool:
    return value is None or isinstance(value, (str, int, list, dict)) or (
        isinstance(value, float) and value == value and abs(value) != float("inf"))


def _mutants(seed: int, count: int) -> list[str]:
    """Near misses of the accepted formats: a character changed, dropped, added or moved."""
    rng = random.Random(seed)
    shapes = ["2026-11-21", "2026-11-21T10:04:00Z", "2026-01-01T01:30:00.5+03:00",
              "2024-02-29T23:59:59-00:30", "0001-01-01T00:00", "9999-12-31T23:59:59Z"]
    alphabet = "0123456789-:+.TZtz ,W\n/٣"
    out = []
    for _ in range(count):
        text = list(rng.choice(shapes))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            move = rng.random()
            if move < 0.4 and at < len(text):
                text[at] = rng.choice(alphabet)
            elif move < 0.6 and at < len(text):
                del text[at]
            else:
                text.insert(at, rng.choice(alphabet))
        out.append("".join(text))
    return out


def test_the_javascript_filters_give_the_same_output():
    values = [v for cases in (DATES, DATETIMES, TIMES, NUMBERS) for v, _ in cases]
    values += [born for born, _, _ in AGES] + _mutants(20261121, 1500)
    values += [0, 1, 20261121, 1.5, True, False, [], {}, ["2026-11-21"], {"a": "2026-11-21"},
               "٢٠٢٦-١١-٢١", "2026-11-21\n", " 2026-11-21", "2026-11-21T10:04:00Z\n"]
    values = [v for v in values if _json_value(v)]
    calls = [(function, [value]) for value in values
             for function in (format_date, format_datetime, format_time, number)]
    calls += [(age, [value, today]) for value in values for today in (TODAY, "2000-02-29")]
    expected = [function(*args) for function, args in calls]
    got = call_js("static/sw/filters.js", [(JS_NAMES[f], args) for f, args in calls])
    differences = [f"{JS_NAMES[f]}{tuple(args)!r}: Python {want!r}, JavaScript {have!r}"
                   for (f, args), want, have in zip(calls, expected, got) if want != have]
    assert not differences, f"{len(differences)} differ:\n" + "\n".join(differences[:40])

