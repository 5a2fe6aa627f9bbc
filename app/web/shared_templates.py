"""The templates the service worker renders too: every template but account/, admin/, auth/
and break_glass/.

The server renders them with Jinja2, the worker with Nunjucks (static/sw/templates.js), from
the same plain-dict context; tests/web/test_template_parity.py requires identical HTML, so
they keep to what the two engines do alike:

- Context: only the JSON-able dict the view passes. No request, session, g, config,
  url_for or current_user; csrf_token is the string shell_context() puts in the dict.
- Never print None, a boolean, a float, a list or a dict as such (Jinja2: None, True, 37.0,
  ['a']; Nunjucks: "", true, 37, a). Use `x or ""` / `x or "—"`, a word for a flag, and
  `| number` for anything that may be a float. Strings and whole numbers print the same.
- Dates and times only through date, datetime, time and age; measurements through number.
- Other filters: length and join of lists, replace and capitalize of strings, urlencode of
  a string, safe, e. No Python methods (.items(), .get() ...), no `is defined`/`is none`:
  test the value itself.
- A key named like a dict method (items, values, keys, get, pop, copy, update ...) or a
  keyword (from, in, is, not, and, or, if, none, true, false ...) is read as x["from"].
- Look into a value that may be None (user.clinic.name is ""), never into a key that
  may be missing (Jinja2 raises on d.missing.name).
- Compare values of one type: Nunjucks's == is JavaScript's loose one ("1" == 1).
- `{% set %}` at the top of a child template or in a block, not to carry a value out of
  a loop.
- Macros: positional arguments, then keyword ones; defaults are fine. Each template that
  calls them imports them itself (an included one too), never `with context`.
- extends/include/import with literal names of shared templates.
- Whitespace: as written. Both engines keep the newline after a tag (no trim_blocks or
  lstrip_blocks), `{%-`/`-%}` work alike, and the final newline of a file is dropped.
"""
from __future__ import annotations

from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SHARED_EXCLUDED_DIRS = ("account/", "admin/", "auth/", "break_glass/")  # pages only the server shows


def shared_template_sources() -> dict[str, str]:
    """{name relative to templates/: source} of every shared template, by name."""
    sources = {}
    for path in sorted(TEMPLATES.rglob("*.html")):
        name = path.relative_to(TEMPLATES).as_posix()
        if not name.startswith(SHARED_EXCLUDED_DIRS):
            # As Jinja2's loader reads it: the bytes as UTF-8, newlines untouched.
            sources[name] = path.read_bytes().decode("utf-8")
    return sources
