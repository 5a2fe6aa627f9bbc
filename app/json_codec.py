"""JSON for the sync answers and the JSON columns, written by orjson.

A push of 100 patient edits writes each record three times as JSON (its history, its stored
answer, the answer itself) and a pull page thousands of records once: the standard library's
encoder was a tenth of the server's time for them. The output means the same as before;
only the bytes differ (no spaces, characters outside ASCII left as UTF-8, keys unsorted).
"""
from __future__ import annotations

import json

import orjson
from flask.json.provider import DefaultJSONProvider

# Dates, datetimes and dataclasses go to the caller's `default`, as they would with the
# standard library, instead of orjson's own rendering: an answer's dates stay as Flask
# writes them, and a JSON column still refuses a value it was never meant to hold.
_OPTIONS = (orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_DATACLASS)


def dumps(value) -> bytes:
    """An answer's body: what Flask's encoder would say of `value`, without spaces."""
    try:
        return orjson.dumps(value, default=DefaultJSONProvider.default, option=_OPTIONS)
    except TypeError:  # an integer beyond 64 bits, which a client may send and get back
        return json.dumps(value, default=DefaultJSONProvider.default,
                          separators=(",", ":")).encode()


def dumps_text(value) -> str:
    """A JSON column's text, refusing what the standard library's encoder would refuse."""
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except TypeError:
        return json.dumps(value, separators=(",", ":"))


def loads(text):
    """Whatever a JSON column holds, including what the standard library wrote before
    (NaN, say), which orjson does not read."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
