"""Bad configuration fails at start-up with a message naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def start_django(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    clean.update({"DISTILL_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "distillapp.settings", **env})
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('ok')"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DATABASE_URL", "mysql://root@localhost/x", "DATABASE_URL must be a postgres://"),
        ("DATABASE_URL", "postgres://user@localhost:5432", "DATABASE_URL names no database"),
        ("REDIS_URL", "http://localhost:6379", "REDIS_URL must be a redis://"),
        ("REDIS_URL", "redis://", "REDIS_URL='redis://' names no host"),
        ("DJANGO_DEBUG", "maybe", "DJANGO_DEBUG='maybe' is not a boolean"),
        ("IMPORT_MAX_TEXT_CHARS", "lots", "IMPORT_MAX_TEXT_CHARS='lots' is not an integer"),
        ("IMPORT_MAX_TEXT_CHARS", "0", "IMPORT_MAX_TEXT_CHARS='0' must be at least 1"),
        ("DISTILL_SERVING_CACHE_SECONDS", "soon", "DISTILL_SERVING_CACHE_SECONDS='soon' is not a number"),
        (
            "DISTILL_SERVING_LOG_FLUSH_SECONDS",
            "-1",
            "DISTILL_SERVING_LOG_FLUSH_SECONDS='-1' must be at least 0",
        ),
        ("DISTILL_WEB_WORKERS", "0", "DISTILL_WEB_WORKERS='0' must be at least 1"),
        ("DISTILL_TEACHER_API_KEY_VARS", "OPENAI_API_KEY,DJANGO_SECRET_KEY", "server's own secret"),
        ("DISTILL_TEACHER_API_KEY_VARS", "NOT A NAME", "not an environment variable name"),
        ("DISTILL_TEACHER_BASE_URLS", "http://user:pw@llm.internal/v1", "without credentials"),
        ("DISTILL_TEACHER_BASE_URLS", "file:///etc/passwd", "http(s) URL"),
        ("DISTILL_PROJECT_CREATORS", "everybody", "'staff' or 'anyone'"),
    ],
)
def test_bad_values_fail_naming_the_variable(tmp_path, variable, value, message):
    result = start_django(tmp_path, **{variable: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_embedded_defaults_need_no_configuration(tmp_path):
    result = start_django(tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "secret_key").exists()


def test_settings_point_at_the_configured_services():
    from django.conf import settings

    assert set(settings.RQ_QUEUES) == {"llm", "short", "training", "default"}
    if os.environ.get("DATABASE_URL"):
        assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"
    else:
        assert settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3"
    if os.environ.get("REDIS_URL"):
        assert settings.RQ_QUEUES["default"]["URL"] == os.environ["REDIS_URL"]
    else:
        assert settings.RQ_QUEUES["default"]["URL"] == f"unix://{settings.EMBEDDED_REDIS_SOCKET}"


def test_production_defaults_pass_the_deploy_check(tmp_path):
    """DEBUG off and nothing said: secure cookies, HSTS, HTTPS redirect; check --deploy is quiet."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SECURE"}}
    env.update({"DISTILL_DATA_DIR": str(tmp_path), "DJANGO_SECRET_KEY": "x" * 60 + "-Aa1!" * 4})
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    local = start_django(tmp_path, DJANGO_SECURE="false")
    assert local.returncode == 0, local.stderr


def test_favicon_is_served_and_linked(client):
    response = client.get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")
    page = client.get("/login/").content.decode()
    assert 'rel="icon"' in page and "favicon.svg" in page


def test_postgresql_connections_bind_on_the_server_and_prepare_repeated_statements_unless_switched_off():
    """The review card's counts query was planned again on every request (bench/README.md,
    review queue); a transaction-pooling PgBouncer cannot keep prepared statements."""
    from distillapp.settings import database_from_env

    os.environ["DISTILL_TEST_DB_URL"] = "postgres://u@127.0.0.1:5432/d"
    try:
        options = database_from_env("DISTILL_TEST_DB_URL", ROOT)["OPTIONS"]
        assert options["server_side_binding"] is True and options["prepare_threshold"] == 5
        os.environ["DISTILL_DB_PREPARED"] = "false"
        assert "server_side_binding" not in database_from_env("DISTILL_TEST_DB_URL", ROOT).get("OPTIONS", {})
    finally:
        os.environ.pop("DISTILL_TEST_DB_URL", None)
        os.environ.pop("DISTILL_DB_PREPARED", None)
