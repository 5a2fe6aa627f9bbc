"""Handler lookup by mutation type name."""
from __future__ import annotations

from collections.abc import Callable

HANDLERS: dict[str, Callable] = {}


def handles(type_name: str):
    def register(func: Callable) -> Callable:
        if type_name in HANDLERS:
            raise RuntimeError(f"two handlers for {type_name}")
        HANDLERS[type_name] = func
        return func
    return register
