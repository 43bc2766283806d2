"""Migrated databases for the benches, without paying `migrate` on every run.

A fresh PostgreSQL database costs 5-10 s of `migrate` on this 2-core machine, a fresh SQLite
file about as much: more than the bench itself at bench/quick.py's sizes. The first run migrates
a template (PostgreSQL: a database `distillapp_tpl_<key>`; SQLite: a file in the temp dir) and
later runs copy it (`CREATE DATABASE ... TEMPLATE`, a file copy: well under a second). The key
hashes every migration file, so a new migration makes a new template (and the old one is
dropped). The benches still call `migrate` after the copy: a no-op that would catch a stale copy.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PREFIX = "distillapp_tpl_"


def migrations_key() -> str:
    digest = hashlib.sha256()
    for path in sorted(REPO_ROOT.glob("*/migrations/*.py")):
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def admin_url(database_url: str) -> tuple[str, str]:
    """The URL of the server's 'postgres' database, and the named database."""
    parts = urlsplit(database_url)
    name = parts.path.lstrip("/")
    if not name:
        raise SystemExit(f"the database URL names no database: {database_url}")
    return urlunsplit(parts._replace(path="/postgres", query="")), name


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _migrate(env: dict[str, str]) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "distillapp.settings", **env}
    env.pop("REDIS_URL", None)
    proc = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--verbosity", "0", "--no-input"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"migrate failed:\n{proc.stderr[-2000:]}")


def postgres_create(database_url: str) -> bool:
    """Create the database as a copy of the migrated template, unless it exists.

    True if this call created it (the caller then drops it when done)."""
    import psycopg

    admin, name = admin_url(database_url)
    template = TEMPLATE_PREFIX + migrations_key()
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            return False
        have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        if template not in have:
            conn.execute(f"CREATE DATABASE {quote_ident(template)}")
            template_url = urlunsplit(urlsplit(database_url)._replace(path="/" + template))
            try:
                with tempfile.TemporaryDirectory(prefix="distill-schema-") as data_dir:
                    _migrate({"DATABASE_URL": template_url, "DISTILL_DATA_DIR": data_dir})
            except Exception:
                conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(template)}")
                raise
            for stale in sorted(have):
                if stale.startswith(TEMPLATE_PREFIX):
                    conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(stale)} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {quote_ident(name)} TEMPLATE {quote_ident(template)}")
    return True


def sqlite_copy(destination: Path) -> None:
    """Put a migrated SQLite database at `destination` (the app's default file name there)."""
    cache = Path(tempfile.gettempdir()) / "distillapp-bench-schema"
    cached = cache / f"{migrations_key()}.sqlite3"
    if not cached.is_file():
        cache.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="distill-schema-") as data_dir:
            _migrate({"DISTILL_DATA_DIR": data_dir, "DATABASE_URL": ""})  # "" = the default SQLite
            built = Path(data_dir) / "distillapp.sqlite3"
            with sqlite3.connect(built) as db:  # fold the WAL into the file before copying it
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            partial = cached.with_suffix(".partial")
            shutil.copyfile(built, partial)
            partial.replace(cached)  # atomic: a concurrent bench never copies half a file
        for stale in cache.glob("*.sqlite3"):
            if stale != cached:
                stale.unlink(missing_ok=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, destination)
