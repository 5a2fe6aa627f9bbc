"""Run the service worker's pure modules under node, to compare them with their Python twins."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CALL = ROOT / "tests" / "js" / "call.mjs"


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed; bash scripts/test.sh installs it", pytrace=False)
    return found


def call_js(module: str, calls: list[tuple[str, list]]) -> list:
    """[(function name, [args...])] → their results, in order; a JS exception fails the test."""
    proc = subprocess.run([node(), str(CALL)], input=json.dumps({"module": module, "calls": calls}),
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    if proc.returncode != 0:
        pytest.fail(f"node failed:\n{proc.stderr}", pytrace=False)
    results = json.loads(proc.stdout)
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        pytest.fail("JavaScript raised:\n" + "\n".join(errors), pytrace=False)
    return [r["value"] for r in results]
