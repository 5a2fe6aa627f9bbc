"""Configuration read from the environment (DESIGN.md §8)."""
from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from app.crypto.config_keys import key_config


class ConfigError(RuntimeError):
    """The environment does not describe a safe way to run the app."""


def _sqlite_url(instance_path: str, filename: str) -> str:
    return f"sqlite:///{Path(instance_path) / filename}"


def _development_secret(instance_path: str) -> str:
    # A random key kept in the instance folder: sessions survive a restart on a
    # developer's laptop, and no key is ever written into the source.
    key_file = Path(instance_path) / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    key = secrets.token_hex(32)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


def build_config(instance_path: str, overrides: dict | None = None) -> dict:
    env = os.environ
    app_env = env.get("APP_ENV", "development")
    if app_env not in ("development", "production"):
        raise ConfigError(f"APP_ENV must be 'development' or 'production', not {app_env!r}.")
    Path(instance_path).mkdir(parents=True, exist_ok=True)

    secret = env.get("SECRET_KEY")
    if not secret:
        if app_env == "production":
            raise ConfigError("SECRET_KEY is not set. Production refuses to start without a real secret key.")
        secret = _development_secret(instance_path)
    elif app_env == "production" and len(secret) < 32:
        raise ConfigError("SECRET_KEY is shorter than 32 characters. Use a long random value in production.")

    database_url = env.get("DATABASE_URL") or _sqlite_url(instance_path, "clinic.db")
    audit_url = env.get("AUDIT_DATABASE_URL") or _sqlite_url(instance_path, "audit.db")
    if app_env == "production" and (not env.get("DATABASE_URL") or not env.get("AUDIT_DATABASE_URL")):
        raise ConfigError("DATABASE_URL and AUDIT_DATABASE_URL must both be set in production.")

    session_life = timedelta(hours=int(env.get("SESSION_ABSOLUTE_HOURS", "12")))
    running = int(env.get("SYNC_RUNNING_REQUESTS", "2"))
    config = {
        "APP_ENV": app_env,
        "SECRET_KEY": secret,
        # Field encryption and audit checkpoint keys; production refuses to start without them.
        **key_config(env, app_env, secret, ConfigError),
        "SQLALCHEMY_DATABASE_URI": _normalise_url(database_url),
        "SQLALCHEMY_BINDS": {"audit": _normalise_url(audit_url)},
        # More engine options for the main database; every database's are in app/extensions.py.
        "SQLALCHEMY_ENGINE_OPTIONS": _pool_options(_normalise_url(database_url), running),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": app_env == "production",
        # The __Host- prefix makes the browser refuse the cookie unless it is Secure, for this
        # host only and for every path: no subdomain or plain-HTTP page can set or shadow it.
        "SESSION_COOKIE_NAME": "__Host-session" if app_env == "production" else "session",
        # The cookie only carries the session's token (its life is kept in the database), so
        # it is written only when its content changes. Written on every answer, a request that
        # started before a form post and ended after it would put back the cookie without
        # the message that post left for the next page.
        "SESSION_REFRESH_EACH_REQUEST": False,
        # The server's idle and absolute timeouts end a session; the cookie outlives neither.
        "PERMANENT_SESSION_LIFETIME": session_life,
        "SESSION_IDLE_TIMEOUT": timedelta(minutes=int(env.get("SESSION_IDLE_MINUTES", "30"))),
        "SESSION_ABSOLUTE_TIMEOUT": session_life,
        "WTF_CSRF_TIME_LIMIT": None,  # the session's own timeouts bound the token's life
        "RATELIMIT_STORAGE_URI": env.get("RATELIMIT_STORAGE_URI", "memory://"),
        "RATELIMIT_HEADERS_ENABLED": True,
        "SIGN_IN_RATE_LIMIT": env.get("SIGN_IN_RATE_LIMIT", "20 per minute"),
        # Checks of the password a device is about to lock records under, per person.
        "DEVICE_SECRET_RATE_LIMIT": env.get("DEVICE_SECRET_RATE_LIMIT", "10 per 10 minutes"),
        # Opening a device's escrowed queue after its key was lost: rare, so kept tight.
        "DEVICE_RECOVERY_RATE_LIMIT": env.get("DEVICE_RECOVERY_RATE_LIMIT", "10 per hour"),
        "ACCOUNT_LOCKOUT_FAILURES": int(env.get("ACCOUNT_LOCKOUT_FAILURES", "8")),
        "ACCOUNT_LOCKOUT_MINUTES": int(env.get("ACCOUNT_LOCKOUT_MINUTES", "15")),
        # Passkeys: empty means "from the request's host" in development and "passkeys off"
        # in production, where the Host header is not to be trusted for this.
        "WEBAUTHN_RP_ID": env.get("WEBAUTHN_RP_ID", ""),
        "WEBAUTHN_ORIGIN": env.get("WEBAUTHN_ORIGIN", ""),
        "PASSKEY_RATE_LIMIT": env.get("PASSKEY_RATE_LIMIT", "10 per minute"),
        "PASSKEY_RECENT_SIGN_IN_MINUTES": int(env.get("PASSKEY_RECENT_SIGN_IN_MINUTES", "10")),
        # Per administrator, shared by the password, code app and passkey resets.
        "ADMIN_RESET_RATE_LIMIT": env.get("ADMIN_RESET_RATE_LIMIT", "10 per hour"),
        # Mixed into the service worker's version: a deploy that changes only configuration
        # or data can still make every device take the new worker.
        "APP_RELEASE": env.get("APP_RELEASE", ""),
        "APPOINTMENT_SLOT_CAPACITY": int(env.get("APPOINTMENT_SLOT_CAPACITY", "4")),
        # Break-glass: how long an emergency opening lasts, and when its review falls due.
        "BREAK_GLASS_MINUTES": int(env.get("BREAK_GLASS_MINUTES", "60")),
        "BREAK_GLASS_REVIEW_HOURS": int(env.get("BREAK_GLASS_REVIEW_HOURS", "72")),
        "MAX_CONTENT_LENGTH": 2 * 1024 * 1024,
        "SYNC_MAX_BODY_BYTES": int(env.get("SYNC_MAX_BODY_BYTES", str(16 * 1024 * 1024))),
        "SYNC_MAX_BATCH": int(env.get("SYNC_MAX_BATCH", "500")),
        "SYNC_PULL_LIMIT": int(env.get("SYNC_PULL_LIMIT", "1000")),
        # Records per pull the browser asks for: smaller pages save progress more often on a
        # poor link, larger ones finish a first sync in fewer round trips.
        "SYNC_BROWSER_PULL_PAGE": int(env.get("SYNC_BROWSER_PULL_PAGE", "2000")),
        # How long a device waits for a sync answer before it gives the request up and sends
        # it again later (a request lost with the link would otherwise hold every later sync).
        "SYNC_BROWSER_REQUEST_TIMEOUT_SECONDS": float(env.get("SYNC_BROWSER_REQUEST_TIMEOUT_SECONDS", "60")),
        # Only the views marked compressed are (the pull: its JSON shrinks about ninefold).
        # A stream must never be: the event stream's pokes would wait in the compressor.
        "COMPRESS_REGISTER": False,
        "COMPRESS_STREAMS": False,
        "COMPRESS_MIMETYPES": ["application/json"],
        # How long a device may be unlocked offline after its person's last full sign-in.
        "DEVICE_OFFLINE_UNLOCK_HOURS": int(env.get("DEVICE_OFFLINE_UNLOCK_HOURS", "72")),
        # PBKDF2-SHA256 rounds deriving the key that wraps a device's data key; raise as
        # devices get faster (a new value applies at the person's next sign-in there).
        "DEVICE_UNLOCK_ITERATIONS": max(600_000, int(env.get("DEVICE_UNLOCK_ITERATIONS", "600000"))),
        # Wrong unlock secrets in a row before the device forgets the wrapped key.
        "DEVICE_UNLOCK_MAX_FAILURES": int(env.get("DEVICE_UNLOCK_MAX_FAILURES", "5")),
        # A tablet left alone: after this many idle minutes its screen locks behind the
        # person's PIN (the key stays in memory); after the longer time, or this many wrong
        # PINs, the key is dropped and only the password opens the records again.
        "DEVICE_IDLE_LOCK_MINUTES": int(env.get("DEVICE_IDLE_LOCK_MINUTES", "5")),
        "DEVICE_COLD_LOCK_MINUTES": int(env.get("DEVICE_COLD_LOCK_MINUTES", "60")),
        "DEVICE_PIN_MAX_FAILURES": int(env.get("DEVICE_PIN_MAX_FAILURES", "5")),
        "SYNC_WINDOW_DAYS": int(env.get("SYNC_WINDOW_DAYS", "180")),
        # e.g. "observation=730,note=1825": how many days back each category goes to devices.
        **({"SYNC_HISTORY_DAYS": _days_per_category(env["SYNC_HISTORY_DAYS"])}
           if env.get("SYNC_HISTORY_DAYS") else {}),
        # Sync requests one process runs at once; the others wait, pushes first (sync_api/turns.py).
        "SYNC_RUNNING_REQUESTS": running,
        "SYNC_TURN_WAIT_SECONDS": float(env.get("SYNC_TURN_WAIT_SECONDS", "30")),
        "SYNC_PULL_SETTLE_SECONDS": float(env.get("SYNC_PULL_SETTLE_SECONDS", "1.0")),
        "SYNC_EVENTS_MAX_SECONDS": float(env.get("SYNC_EVENTS_MAX_SECONDS", "55")),
        "SYNC_EVENTS_KEEPALIVE_SECONDS": float(env.get("SYNC_EVENTS_KEEPALIVE_SECONDS", "15")),
        "SYNC_EVENTS_POLL_SECONDS": float(env.get("SYNC_EVENTS_POLL_SECONDS", "0.1")),
        "SYNC_EVENTS_IDLE_SECONDS": float(env.get("SYNC_EVENTS_IDLE_SECONDS", "30")),
        # Event streams one process serves at once: each holds a thread for its minute, so
        # the Procfile gives a worker this many threads on top of GUNICORN_THREADS, and its
        # worker (app/gunicorn_worker.py) a connection for each stream it holds.
        "SYNC_EVENTS_STREAMS": int(env.get("SYNC_EVENTS_STREAMS", "96")),
        # At least 2 s, whatever the setting says: never a tight loop of refused pages.
        "SYNC_EVENTS_BUSY_RETRY_SECONDS": max(2.0, float(env.get("SYNC_EVENTS_BUSY_RETRY_SECONDS", "30"))),
        # When the device list in the console flags a device as at risk of losing data.
        "SYNC_RISK_PENDING_HOURS": float(env.get("SYNC_RISK_PENDING_HOURS", "24")),
        "SYNC_RISK_SILENT_DAYS": float(env.get("SYNC_RISK_SILENT_DAYS", "3")),
        "SYNC_RISK_QUOTA_PERCENT": float(env.get("SYNC_RISK_QUOTA_PERCENT", "80")),
    }
    if overrides:
        config.update(overrides)
    return config


def _days_per_category(text: str) -> dict[str, int]:
    days = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if not value.strip().isdigit():
            raise ConfigError(f"SYNC_HISTORY_DAYS: {part!r} is not 'category=days'.")
        days[name.strip()] = int(value)
    return days


# Sync requests of a process that may hold a connection past their turn at once
# (sync_api/turns.py): with 2 running, at most 10 hold one.
SYNC_AWAY_AT_MOST = 8


def _pool_options(url: str, running_syncs: int) -> dict:
    """A PostgreSQL pool that keeps open every connection a busy hour's sync requests hold.

    SQLAlchemy's pool keeps 5 and closes any connection beyond them as it comes back, so with
    ten sync requests holding connections it closed and opened them again all the time: 159
    new connections in one peak benchmark run, each a new PostgreSQL process that loads its
    catalogs and prepares its statements anew. The ceiling stays 15 a process."""
    if not url.startswith("postgresql"):
        return {}
    kept = running_syncs + SYNC_AWAY_AT_MOST
    return {"pool_size": kept, "max_overflow": max(0, 15 - kept)}


def _normalise_url(url: str) -> str:
    # Hosting platforms hand out postgres:// URLs; SQLAlchemy wants the driver named.
    if url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url[len("postgres://"):]
    elif url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url
