"""The two databases the app runs on, each as a migrated, seeded base that is cloned per use.

SQLite: files under WORK/sqlite/, cloned by copying. PostgreSQL: a throwaway cluster
(scripts/pg_cluster.sh) whose base databases are cloned with CREATE DATABASE ... TEMPLATE.
The base is made with the app's own CLI: `flask db upgrade`, `flask demo seed --patients 0`
(an organization, clinics and a user per role), `flask tokens create nurse...`.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from _paths import ROOT

# Fixed so every process of a run (CLI, gunicorn, in-process census) seals and opens alike;
# development mode derives the field keys from it. Nothing here protects anything.
SECRET_KEY = "bench-push-not-a-secret-0123456789abcdef0123456789ab"


def app_env(main_url: str, audit_url: str) -> dict:
    env = {**os.environ, "APP_ENV": "development", "SECRET_KEY": SECRET_KEY,
           "DATABASE_URL": main_url, "AUDIT_DATABASE_URL": audit_url,
           "PYTHONDONTWRITEBYTECODE": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return env


def flask_cli(urls: tuple[str, str], *args: str, timeout: int = 120) -> str:
    out = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT,
                         env=app_env(*urls), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"flask {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return out.stdout


class Backend:
    name = "?"

    def make_base(self) -> dict:
        """Migrate and seed the base; returns {'token', 'clinic_id', 'username'}."""
        urls = self.urls("base")
        self.create("base")
        flask_cli(urls, "db", "upgrade")
        users = json.loads(flask_cli(urls, "demo", "seed", "--patients", "0", "--json"))
        nurse = next(u for u in users if u["role"] == "nurse")
        token = flask_cli(urls, "tokens", "create", nurse["username"], "--name", "bench").strip()
        return {"token": token, "clinic_id": nurse["clinic_id"], "username": nurse["username"]}

    # per backend: urls(name) -> (main, audit) as DATABASE_URL takes them; create(name);
    # clone(name) -> urls of a fresh copy of base; connect(url) -> DB-API connection;
    # sa_url(url) -> the SQLAlchemy form.

    def count_rows(self, urls: tuple[str, str]) -> dict[str, int]:
        counts = {}
        for which, url in zip(("main", "audit"), urls):
            con = self.connect(url)
            try:
                for table in self.tables(con):
                    if table == "alembic_version":
                        continue
                    cur = con.cursor()
                    cur.execute(f'SELECT count(*) FROM "{table}"')  # names from the catalog
                    counts[table if which == "main" else f"{table} (audit db)"] = cur.fetchone()[0]
            finally:
                con.close()
        return counts


class SQLiteBackend(Backend):
    name = "sqlite"

    def __init__(self, work: Path):
        self.dir = work / "sqlite"
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)

    def urls(self, name):
        return (f"sqlite:///{self.dir / name / 'clinic.db'}",
                f"sqlite:///{self.dir / name / 'audit.db'}")

    def create(self, name):
        (self.dir / name).mkdir(parents=True, exist_ok=True)

    def seal_base(self):
        for f in ("clinic.db", "audit.db"):
            con = sqlite3.connect(self.dir / "base" / f)
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.close()

    def clone(self, name, source="base"):
        target = self.dir / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for f in ("clinic.db", "audit.db"):
            shutil.copyfile(self.dir / source / f, target / f)
        return self.urls(name)

    def drop(self, name):
        shutil.rmtree(self.dir / name, ignore_errors=True)

    @staticmethod
    def sa_url(url):
        return url

    @staticmethod
    def connect(url):
        return sqlite3.connect(url[len("sqlite:///"):], isolation_level=None)

    @staticmethod
    def tables(con):
        return [r[0] for r in con.execute(
            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]

    def close(self):
        pass


class PostgresBackend(Backend):
    name = "postgresql"

    def __init__(self, work: Path, port: int):
        self.dir = work / "pg"
        self.port = port
        out = subprocess.run(["bash", str(ROOT / "scripts" / "pg_cluster.sh"), "start",
                              str(self.dir), str(port)], capture_output=True, text=True, timeout=90)
        if out.returncode != 0:
            raise RuntimeError(f"pg_cluster.sh start failed: {out.stderr[-2000:]}")
        self.started = True

    def dsn(self, db="postgres"):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def urls(self, name):
        return (f"postgresql://postgres@127.0.0.1:{self.port}/bench_{name}_main",
                f"postgresql://postgres@127.0.0.1:{self.port}/bench_{name}_audit")

    def _admin(self, *sql):
        import psycopg
        with psycopg.connect(self.dsn(), autocommit=True) as con:
            for s in sql:
                con.execute(s)

    def create(self, name):
        self._admin(f'CREATE DATABASE "bench_{name}_main"', f'CREATE DATABASE "bench_{name}_audit"')

    def seal_base(self):
        pass

    def clone(self, name, source="base"):
        self.drop(name)
        self._admin(f'CREATE DATABASE "bench_{name}_main" TEMPLATE "bench_{source}_main"',
                    f'CREATE DATABASE "bench_{name}_audit" TEMPLATE "bench_{source}_audit"')
        return self.urls(name)

    def drop(self, name):
        self._admin(f'DROP DATABASE IF EXISTS "bench_{name}_main" WITH (FORCE)',
                    f'DROP DATABASE IF EXISTS "bench_{name}_audit" WITH (FORCE)')

    @staticmethod
    def sa_url(url):
        return "postgresql+psycopg://" + url[len("postgresql://"):]

    def connect(self, url):
        import psycopg
        return psycopg.connect(self.dsn(url.rsplit("/", 1)[1]), autocommit=True)

    @staticmethod
    def tables(con):
        cur = con.cursor()
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return [r[0] for r in cur.fetchall()]

    def checkpoint(self):
        self._admin("CHECKPOINT")

    def close(self):
        if self.started:
            subprocess.run(["bash", str(ROOT / "scripts" / "pg_cluster.sh"), "stop", str(self.dir)],
                           capture_output=True, timeout=90)
            self.started = False
