"""bandit finds nothing in the server code that is not justified where it stands.

A finding is fixed, or marked `# nosec B<test id>: why` on its line: the test id keeps the mark
from hiding any other finding on that line, and the reason tells the next reader why it is
safe. A bare `# nosec` fails here even though bandit would accept it.
"""
from __future__ import annotations

import json
import re
import subprocess  # nosec B404: runs bandit itself, with fixed arguments
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("app", "sync_api")
JUSTIFIED = re.compile(r"#\s*nosec\s+B\d{3}(\s*,\s*B\d{3})*:\s*\S")


def test_bandit_reports_nothing_unjustified():
    scan = subprocess.run(  # nosec B603: our interpreter, our arguments
        [sys.executable, "-m", "bandit", "-q", "-c", "pyproject.toml", "-f", "json", "-r",
         *SCANNED], cwd=ROOT, capture_output=True, text=True, timeout=120)
    report = json.loads(scan.stdout)
    assert report["errors"] == [], report["errors"]
    findings = [f"{i['filename']}:{i['line_number']} {i['test_id']} {i['issue_text']}"
                for i in report["results"]]
    assert findings == [], "fix these, or justify each with '# nosec B<test id>: why':\n" + \
        "\n".join(findings)


def test_every_nosec_names_its_test_and_a_reason():
    bare = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for folder in SCANNED for path in sorted((ROOT / folder).rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), start=1)
            if re.search(r"#\s*nosec\b", line) and not JUSTIFIED.search(line)]
    assert bare == []
