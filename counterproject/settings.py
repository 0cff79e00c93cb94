"""Settings, read from the environment. Defaults serve local development; see README "Configuration"."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlencode, urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def envstr(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def envbool(name: str, default: str) -> bool:
    value = os.environ.get(name, default).lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise ImproperlyConfigured(f"{name} must be true or false, got {value!r}")
    return value in ("true", "1", "yes")


def envint(name: str, default: str) -> int:
    value = os.environ.get(name, default)
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None


def envfloat(name: str, default: str) -> float:
    value = os.environ.get(name, default)
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def redis_url_with_db(url: str, db: int) -> str:
    """The same Redis server with another logical database (``redis://`` or ``unix://`` URLs)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        # urlunsplit would drop the empty authority ("unix:/path"), which redis-py refuses.
        return f"unix://{parts.path}?{urlencode({'db': db})}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def broker_url(redis_url: str) -> str:
    # kombu spells a Unix-socket Redis "redis+socket://"; redis-py spells it "unix://".
    parts = urlsplit(redis_url)
    if parts.scheme == "unix":
        return f"redis+socket://{parts.path}" + (f"?{parts.query}" if parts.query else "")
    return redis_url


DEBUG = envbool("DEBUG", "false")
SECRET_KEY = envstr("SECRET_KEY", "dev-only-insecure-secret-key-change-me-in-production-0123456789")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")

# With DATABASE_URL / REDIS_URL unset, embedded servers from PyPI start under COUNTER_DATA_DIR.
if envstr("DATABASE_URL"):
    DATABASES = {"default": dj_database_url.parse(envstr("DATABASE_URL"), conn_max_age=600)}
else:
    from counterproject import embedded

    DATABASES = {
        "default": {"ENGINE": "django.db.backends.postgresql", "CONN_MAX_AGE": 600, **embedded.ensure_postgres()}
    }
# No per-request health check: it is a round trip (SELECT 1) on every request. After PostgreSQL
# restarts, the first query of each stale connection fails instead (503, retried by clients with
# their tokens) and Django closes that connection at the end of the request.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = False
DATABASES["default"].setdefault("OPTIONS", {})
# Fail fast (503) when PostgreSQL is unreachable instead of hanging a request thread.
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", 5)

if envstr("REDIS_URL"):
    REDIS_URL = envstr("REDIS_URL")
else:
    from counterproject import embedded

    REDIS_URL = embedded.ensure_redis()
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL") or broker_url(REDIS_URL)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "counters",
    "rollups",
    "dashboard",
]

MIDDLEWARE = [
    "counterproject.middleware.RequestIdMiddleware",
    "counterproject.middleware.RequestMetricsMiddleware",
    # Above every middleware that can answer by itself (CommonMiddleware's DisallowedHost 400, for
    # one), so each error on /api/ paths leaves in the JSON envelope.
    "counters.api.errors.ApiErrorMiddleware",
    "counters.api.middleware.ChunkedBodyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Serves the admin's and the dashboard's static files from gunicorn itself (no CDN, no proxy).
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "counterproject.middleware.OperatorPagesReconnectMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "counterproject.urls"
WSGI_APPLICATION = "counterproject.wsgi.application"
APPEND_SLASH = False

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

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_TZ = True
USE_I18N = False
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Bodies larger than this are refused with 413 before they are parsed.
DATA_UPLOAD_MAX_MEMORY_SIZE = envint("MAX_BODY_BYTES", str(2 * 1024 * 1024))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["counters.api.auth.ApiKeyAuthentication"],
    # Deny unless a view opts into a role: a new view cannot forget authorization.
    "DEFAULT_PERMISSION_CLASSES": ["counters.api.auth.DenyAll"],
    "DEFAULT_PARSER_CLASSES": ["counters.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "counters.api.errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["counters.api.throttling.ApiKeyRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "counters.api.schema.CounterAutoSchema",
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Counter service API",
    "DESCRIPTION": "Distributed counters in namespaces: best_effort, eventual and accurate.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # counter_type and a count's consistency share one choice set: one component, not two.
    "ENUM_NAME_OVERRIDES": {"CounterTypeEnum": "counters.models.CounterType.values"},
}

# Reliability knobs of Celery:
# - acks_late + reject_on_worker_lost: a task is acknowledged only after it ran, so a worker killed
#   mid-batch has its message redelivered; rollups are idempotent, so a redelivery is harmless.
# - prefetch 1: a busy worker does not hoard messages that an idle one could run.
# - visibility_timeout (Redis broker): an unacknowledged message is redelivered after this long;
#   it must exceed the longest task (time_limit) or long tasks would run twice for no reason.
# - time limits: a stuck rollup is killed rather than holding its queue forever.
# - results are ignored: every task is fire-and-forget and reports through logs and metrics.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = envint("CELERY_TASK_TIME_LIMIT", "300")
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 30
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_TASK_TIME_LIMIT + 60}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_SERIALIZER = "json"
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TASK_DEFAULT_QUEUE = "maintenance"
CELERY_TASK_ROUTES = {"rollups.drain_queue": {"queue": "rollups"}}

COUNTERS = {
    # Redis logical database of counters, queues and caches (tests use their own).
    "REDIS_DB": envint("COUNTER_REDIS_DB", "0"),
    # Write transactions are cancelled past this; it must stay below every accept_limit.
    "WRITE_STATEMENT_TIMEOUT_MS": envint("COUNTER_WRITE_TIMEOUT_MS", "2000"),
    # The write statement is PREPAREd once per connection (half its PostgreSQL CPU is planning);
    # false behind a pooler that moves sessions between server connections (PgBouncer in
    # transaction mode).
    "PREPARED_STATEMENTS": envbool("COUNTER_PREPARED_STATEMENTS", "true"),
    # How long a request waits for a concurrent request holding the same token before a 409.
    "TOKEN_LOCK_TIMEOUT_MS": envint("COUNTER_TOKEN_LOCK_TIMEOUT_MS", "1000"),
    # Back-pressure: 429 once this many counters wait in the rollup queues.
    "MAX_ROLLUP_BACKLOG": envint("COUNTER_MAX_ROLLUP_BACKLOG", "200000"),
    # Back-pressure: 429 once the average write transaction (per web process) takes longer than
    # this; the average halves every half-life without new samples, so shedding is brief.
    "MAX_WRITE_LATENCY_MS": envint("COUNTER_MAX_WRITE_LATENCY_MS", "1000"),
    "WRITE_LATENCY_HALF_LIFE_SECONDS": envfloat("COUNTER_WRITE_LATENCY_HALF_LIFE_SECONDS", "1.0"),
    "BATCH_SIZE_MIN": envint("COUNTER_BATCH_SIZE_MIN", "8"),
    "BATCH_SIZE_MAX": envint("COUNTER_BATCH_SIZE_MAX", "1024"),
    # Target latency of one rollup batch: batches grow below it and shrink above it.
    "BATCH_TARGET_SECONDS": envfloat("COUNTER_BATCH_TARGET_SECONDS", "0.25"),
    # Pause between batches, as a fraction of the last batch's duration (back-pressure on rollups).
    "PACING_FACTOR": envfloat("COUNTER_PACING_FACTOR", "0.5"),
    # A claimed batch whose worker died is handed to another worker after this lease.
    "ROLLUP_LEASE_SECONDS": envint("COUNTER_ROLLUP_LEASE_SECONDS", "60"),
    # Stale sweep: counters with writes newer than their checkpoint by more than this.
    "STALE_AFTER_SECONDS": envint("COUNTER_STALE_AFTER_SECONDS", "30"),
    # Audit: checkpoints recounted from raw events per run of the periodic audit task.
    "AUDIT_SAMPLE_SIZE": envint("COUNTER_AUDIT_SAMPLE_SIZE", "100"),
    "PARTITION_DAYS_AHEAD": envint("COUNTER_PARTITION_DAYS_AHEAD", "3"),
    # Requests per second per API key when the key sets no limit of its own; 0 means unlimited.
    "RATE_LIMIT_PER_SECOND": envint("COUNTER_RATE_LIMIT_PER_SECOND", "0"),
    # /readyz fails once Celery beat's heartbeat (every 15 s) is older than this ...
    "BEAT_STALE_SECONDS": envint("COUNTER_BEAT_STALE_SECONDS", "60"),
    # ... or when there is none this long after the web process started.
    "BEAT_STARTUP_GRACE_SECONDS": envint("COUNTER_BEAT_STARTUP_GRACE_SECONDS", "60"),
}

# When set, /metrics answers only "Authorization: Bearer <METRICS_TOKEN>".
METRICS_TOKEN = envstr("METRICS_TOKEN")

# Mounts bench/'s no-op and naive row-counter endpoints; only `make bench` sets it.
BENCHMARK_ENDPOINTS = envbool("BENCHMARK_ENDPOINTS", "false")

LOG_FORMAT = envstr("LOG_FORMAT", "plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT must be plain or json, got {LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "counterproject.middleware.RequestIdFilter"}},
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"},
        # One JSON object per line, for log shippers.
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(request_id)s %(message)s",
            "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
        },
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": envstr("LOG_LEVEL", "INFO")},
}

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES", "false")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", "0")
# Production (see README "Security") sets both once every subdomain is served over TLS only.
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "false")
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "false")
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "false")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if envbool("BEHIND_TLS_PROXY", "false") else None
LOGIN_URL = "/admin/login/"
