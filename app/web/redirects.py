"""Where a form may send the browser next: only to a path of this site."""
from __future__ import annotations

import re

# Browsers read a backslash as a slash and drop tabs and newlines, so "/\evil.example" and
# "/\t/evil.example" both lead off the site; a path of this site has none of them.
_LOCAL_PATH = re.compile(r"^/(?![/\\])[^\\\x00-\x20\x7f]*$")


def local_path(target: str | None, fallback: str = "/") -> str:
    return target if target and _LOCAL_PATH.match(target) else fallback
