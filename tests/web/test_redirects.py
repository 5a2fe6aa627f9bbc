"""Forms send the browser on only to paths of this site, in the server and in the worker."""
from __future__ import annotations

import pytest

from app.web.redirects import local_path
from tests.js_bridge import call_js

CASES = [
    ("/worklist/triage", "/worklist/triage"),
    ("/patients/1?q=a%20b#vitals", "/patients/1?q=a%20b#vitals"),
    ("//evil.example", "/"),
    ("/\\evil.example", "/"),
    ("/\t/evil.example", "/"),
    ("/x\n/y", "/"),
    ("https://evil.example/", "/"),
    ("javascript:alert(1)", "/"),
    ("", "/"),
    (None, "/"),
    ("worklist", "/"),
]


@pytest.mark.parametrize("target, expected", CASES)
def test_only_paths_of_this_site(target, expected):
    assert local_path(target) == expected


def test_the_worker_decides_the_same():
    got = call_js("static/sw/forms.js", [("localPath", [t, "/"]) for t, _ in CASES])
    assert got == [expected for _, expected in CASES]
