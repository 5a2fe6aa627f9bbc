"""Command-line tools: `flask demo`, `flask tokens`, `flask audit`, `flask setup`, `flask sync`,
`flask keys`."""
from __future__ import annotations

from flask import Flask

from app.cli import audit_cmd, demo_cmd, keys_cmd, setup_cmd, sync_cmd, tokens_cmd


def register_cli(app: Flask) -> None:
    for group in (demo_cmd.demo, tokens_cmd.tokens, audit_cmd.audit, setup_cmd.setup, sync_cmd.sync,
                  keys_cmd.keys):
        app.cli.add_command(group)
