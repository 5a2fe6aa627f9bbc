"""The clinic record server: create_app() builds it from the environment."""
from __future__ import annotations

from flask import Flask

from app.config import build_config


def create_app(overrides: dict | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True,
                template_folder="../templates", static_folder="../static")
    app.config.from_mapping(build_config(app.instance_path, overrides))

    from app import models  # noqa: F401  (registers every table on the metadata)
    from app.database import configure_engine
    from app.extensions import compress, csrf, db, htmx, limiter, login_manager, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=str(app.root_path + "/../migrations"),
                     render_as_batch=True)
    csrf.init_app(app)
    htmx.init_app(app)
    compress.init_app(app)
    limiter.init_app(app)
    login_manager.init_app(app)
    with app.app_context():
        configure_engine(db.engine)
        configure_engine(db.engines["audit"], always_immediate=True)

    from app.web import register_web
    register_web(app)

    from sync_api import register_sync
    register_sync(app)

    from app.cli import register_cli
    register_cli(app)
    return app
