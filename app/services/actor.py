"""Who is acting, where, and in which roles: the subject of every authorization check."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Actor:
    user_id: str
    username: str
    organization_id: str
    clinic_id: str | None
    roles: frozenset[str]
    client_id: str | None = None
    request_id: str | None = None

    @property
    def role_names(self) -> str:
        return ",".join(sorted(self.roles))
