"""Errors the sync API answers with: a status, a stable code and a message a person can act on."""
from __future__ import annotations


class SyncError(Exception):
    def __init__(self, status: int, code: str, message: str, *, problems: list | None = None,
                 extra: dict | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        # A 400 always lists what to fix, even when only the whole body is wrong.
        self.problems = problems or ([{"field": "", "message": message}] if status == 400 else [])
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self, request_id: str | None) -> dict:
        body = {"error": self.code, "message": self.message, **self.extra}
        if self.problems:
            body["problems"] = self.problems
        if request_id:
            body["request_id"] = request_id
        return body
