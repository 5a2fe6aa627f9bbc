"""Sync fixtures: the Python client speaking to the app through Flask's test client."""
from __future__ import annotations

import pytest

from app.extensions import db
from app.services import tokens
from sync_api.client import Reply, SyncClient


class FlaskTransport:
    """The app in-process: every request is a real request through routing, auth and commit."""

    def __init__(self, test_client, headers: dict | None = None):
        self.test_client = test_client
        self.headers = headers or {}

    def __call__(self, method: str, path: str, body: dict | None) -> Reply:
        response = self.test_client.open(path, method=method, json=body, headers=self.headers)
        return Reply(response.status_code, response.get_json(silent=True) or {},
                     dict(response.headers))


@pytest.fixture
def token_for(app, world):
    """token_for(role, clinic='A') -> a bearer token of that user, at that clinic."""
    def _token(role: str, clinic: str = "A") -> str:
        secret = tokens.issue(world.user(role, clinic), "test device", world.clinics[clinic].id)
        db.session.commit()
        return secret
    return _token


@pytest.fixture
def transport_for(app, token_for):
    def _transport(role: str, clinic: str = "A") -> FlaskTransport:
        return FlaskTransport(app.test_client(),
                              {"Authorization": f"Bearer {token_for(role, clinic)}"})
    return _transport


@pytest.fixture
def device(transport_for):
    """device(role, clinic='A') -> a SyncClient with its own client id and token."""
    def _device(role: str, clinic: str = "A", **kwargs) -> SyncClient:
        return SyncClient(transport_for(role, clinic), **kwargs)
    return _device


def post(transport: FlaskTransport, path: str, body) -> Reply:
    return transport("POST", path, body)
