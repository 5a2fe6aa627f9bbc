"""Key objects built from the app's configuration once, and again only when it changes."""
from __future__ import annotations

from typing import Callable, TypeVar

from flask import current_app

Built = TypeVar("Built")


def from_config(slot: str, names: tuple[str, ...], build: Callable[..., Built]) -> Built:
    """`build(*values of names)`, cached in the app until one of those settings changes (as
    a test's, or a rotation's, do)."""
    config = current_app.config
    basis = tuple(config.get(name, "") for name in names)
    cached = current_app.extensions.get(slot)
    if cached is None or cached[0] != basis:
        cached = current_app.extensions[slot] = (basis, build(*basis))
    return cached[1]
