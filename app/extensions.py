"""Flask extensions, created unbound and initialised in create_app()."""
from __future__ import annotations

from flask_compress import Compress
from flask_htmx import HTMX
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from app import json_codec

# Constraint names must be deterministic so migrations can drop and alter them
# on every database, SQLite's batch mode included.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Every database, the audit one included (Flask-SQLAlchemy gives SQLALCHEMY_ENGINE_OPTIONS to
# the default one only): JSON columns are written by orjson (app/json_codec.py). A connection
# that died with a restart is replaced before use by app/database.py, without pre-ping's query.
ENGINE_DEFAULTS = {"json_serializer": json_codec.dumps_text,
                   "json_deserializer": json_codec.loads}

db = SQLAlchemy(model_class=Base, engine_options=ENGINE_DEFAULTS)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
htmx = HTMX()
compress = Compress()
limiter = Limiter(key_func=get_remote_address, default_limits=[])
