"""Blaze settings: one module, driven by environment variables.

Defaults suit a laptop: SQLite, Redis on localhost, DEBUG off. Every knob is an environment
variable named below; docs/configuration.md lists them.
"""

import importlib.util
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

from core.shared_state import SENTINEL_TIMEOUTS, SentinelUrl

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("BLAZE_VAR_DIR", BASE_DIR / "var"))


def env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name, default=""):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def _secret_key():
    """SECRET_KEY from the environment, else from an untracked file generated on first run."""
    if os.environ.get("SECRET_KEY"):
        return os.environ["SECRET_KEY"]
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


SECRET_KEY = _secret_key()

DEBUG = env_bool("DEBUG")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "csp",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "channels",
    "accounts",
    "engines",
    "alerts",
    "dashboard",
    "usage",
    "ratelimits",
    "security",
]

# Every middleware here is async-capable: a sync one would hold a thread for the whole of a request,
# and a streamed or long inference request would then tie up one of the few threads for minutes.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "accounts.middleware.RequestIdMiddleware",
    "telemetry.middleware.RequestMetricsMiddleware",
    # Cheap refusals (block list, size, threat patterns) before any session or database work.
    "security.middleware.ThreatProtectionMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "accounts.middleware.MfaRequiredMiddleware",
    # After authentication, so that limits per user can see the signed-in user.
    "ratelimits.middleware.RateLimitMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "core.middleware.ContentSecurityPolicyMiddleware",
]
# The chain for /v1 (blaze_site.asgi): its views authenticate by key and keep no session, so the
# browser's middleware (sessions, CSRF, sign-in, MFA, messages, static files) has nothing to do there.
API_MIDDLEWARE = [
    "core.middleware.SecurityMiddleware",
    "accounts.middleware.RequestIdMiddleware",
    "telemetry.middleware.RequestMetricsMiddleware",
    "security.middleware.ThreatProtectionMiddleware",
    "ratelimits.middleware.RateLimitMiddleware",
]

ROOT_URLCONF = "blaze_site.urls"
ASGI_APPLICATION = "blaze_site.asgi.application"

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

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'blaze.sqlite3'}",
        conn_max_age=int(os.environ.get("DATABASE_CONN_MAX_AGE", "0")),
    )
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # A database host that hangs (accepts, never answers) fails a connection in seconds, not never
    # (`?connect_timeout=` in DATABASE_URL sets another), and is then not asked again for a few seconds.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 3)
    DATABASES["default"]["ENGINE"] = "blaze_site.postgresql"
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory, so that servers started by the browser tests share the test database;
    # one per test process, so that concurrent runs do not collide.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One Redis (redis://, rediss://, unix://) or a Sentinel set (redis+sentinel://, core/shared_state.py's
# SentinelUrl), for every use Blaze makes of Redis; the sentinels' own password, if they want one, apart.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
REDIS_SENTINEL_PASSWORD = os.environ.get("BLAZE_REDIS_SENTINEL_PASSWORD", "")
redis_sentinel = SentinelUrl.parse(REDIS_URL, REDIS_SENTINEL_PASSWORD)  # None: one Redis
# Every Redis key Blaze writes starts with this; tests give each run its own.
REDIS_PREFIX = os.environ.get("BLAZE_REDIS_PREFIX", "blaze")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": REDIS_PREFIX,
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL], "prefix": f"{REDIS_PREFIX}:asgi"},
    }
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", redis_sentinel.kombu_url() if redis_sentinel else REDIS_URL)
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND",
                                       redis_sentinel.kombu_url() if redis_sentinel else REDIS_URL)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Threads, not processes: concurrent requests must meet in one process, where the model and its
# batcher live (a GPU belongs to one process). Run one worker per device.
CELERY_WORKER_POOL = "threads"
CELERY_WORKER_CONCURRENCY = int(os.environ.get("BLAZE_WORKER_THREADS", "64"))
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_EXPIRES = 3600
# A message a dead worker held goes back to the queue after this long (the Redis transport's way).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(os.environ.get("BLAZE_REDELIVERY_SECONDS", "300")),
    "global_keyprefix": f"{REDIS_PREFIX}:celery:",
}

if redis_sentinel:
    # Each library's own Sentinel support, each asking the sentinels for the master as it connects
    # (docs/decisions.md, "Redis Sentinel"); the timeouts end what a dead master would hold.
    CACHES["default"]["LOCATION"] = [REDIS_URL]  # one URL: Django splits a string at its commas
    CACHES["default"]["OPTIONS"] = {"pool_class": "core.shared_state.CachePool", **SENTINEL_TIMEOUTS}
    CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = [redis_sentinel.channel_layer_host()]
    CELERY_BROKER_TRANSPORT_OPTIONS |= {**redis_sentinel.celery_transport_options(), **SENTINEL_TIMEOUTS}
    CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = redis_sentinel.celery_transport_options()
    CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = SENTINEL_TIMEOUTS["socket_connect_timeout"]
    CELERY_REDIS_SOCKET_TIMEOUT = SENTINEL_TIMEOUTS["socket_timeout"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# Engine hosts (Celery workers)
BLAZE_MODELS_DIR = Path(os.environ.get("BLAZE_MODELS_DIR", VAR_DIR / "models"))  # where setup_demo builds models
# How often each worker scans BLAZE_MODELS_DIR and its Hugging Face cache for the Models page.
BLAZE_CATALOG_SECONDS = float(os.environ.get("BLAZE_CATALOG_SECONDS", "60"))
# How long saving a local engine waits for the live workers to say what they find at its model.
BLAZE_INSPECT_TIMEOUT_SECONDS = float(os.environ.get("BLAZE_INSPECT_TIMEOUT_SECONDS", "10"))
# The Hugging Face hub a worker downloads models from (the Models page's "Download from a hub"): the
# public one or a mirror, with a token for gated and private repositories. The names huggingface_hub reads.
HF_ENDPOINT = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
HF_TOKEN = os.environ.get("HF_TOKEN", "")
BLAZE_CACHE_BYTES = int(os.environ.get("BLAZE_CACHE_BYTES", "0"))  # 0: a share of the device's memory
BLAZE_HEARTBEAT_SECONDS = float(os.environ.get("BLAZE_HEARTBEAT_SECONDS", "2"))
BLAZE_WORKER_LOST_SECONDS = float(os.environ.get("BLAZE_WORKER_LOST_SECONDS", "8"))
BLAZE_LOAD_ATTEMPTS = int(os.environ.get("BLAZE_LOAD_ATTEMPTS", "3"))  # a failed model load is retried
BLAZE_REQUEST_TIMEOUT_SECONDS = float(os.environ.get("BLAZE_REQUEST_TIMEOUT_SECONDS", "300"))
# Bulkheads and admission (docs/configuration.md): a worker refuses requests beyond this many at once
# (503; 0: its threads less an eighth, so a refusal is immediate rather than a wait in the broker); an
# engine's own cap on waiting requests is its `max_queue` config (429).
BLAZE_WORKER_MAX_IN_FLIGHT = int(os.environ.get("BLAZE_WORKER_MAX_IN_FLIGHT", "0"))
# Priorities 0-9 (9 first): a request's default is its API key's `priority`, else its role's here; it may
# ask for less, never more. A waiting request gains one level per BLAZE_PRIORITY_AGEING_SECONDS.
BLAZE_ROLE_PRIORITY = {"viewer": 4, "operator": 4, "admin": 4}
BLAZE_PRIORITY_AGEING_SECONDS = float(os.environ.get("BLAZE_PRIORITY_AGEING_SECONDS", "2"))

# Monitoring: who may read /metrics, /metrics/prometheus and /health/detailed without signing in.
BLAZE_METRICS_TOKEN = os.environ.get("BLAZE_METRICS_TOKEN", "")
BLAZE_METRICS_ALLOW_IPS = env_list("BLAZE_METRICS_ALLOW_IPS", "127.0.0.1/32,::1/128")
BLAZE_MIN_FREE_DISK_BYTES = int(os.environ.get("BLAZE_MIN_FREE_DISK_BYTES", str(1 << 30)))  # less: degraded

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "overview"
LOGOUT_REDIRECT_URL = "login"

# Login lockout: this many failures within the window lock the account (or the IP) for the window.
BLAZE_LOCKOUT_FAILURES = int(os.environ.get("BLAZE_LOCKOUT_FAILURES", "5"))
BLAZE_LOCKOUT_IP_FAILURES = int(os.environ.get("BLAZE_LOCKOUT_IP_FAILURES", "20"))
BLAZE_LOCKOUT_SECONDS = int(os.environ.get("BLAZE_LOCKOUT_SECONDS", "900"))
OTP_TOTP_ISSUER = "Blaze"

SESSION_COOKIE_SECURE = env_bool("SECURE_COOKIES", not DEBUG and env_bool("BLAZE_HTTPS"))
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_SSL_REDIRECT = env_bool("BLAZE_HTTPS")
SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000" if env_bool("BLAZE_HTTPS") else "0"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = SECURE_HSTS_SECONDS > 0
SECURE_HSTS_PRELOAD = SECURE_HSTS_SECONDS > 0
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if env_bool("BLAZE_BEHIND_PROXY") else None
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# Every page: scripts from Blaze's own origin only (no inline script; data goes in json_script tags).
# style-src allows inline styles: plotly.js injects its own <style> and style attributes as it draws.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"], "script-src": ["'self'"], "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"], "connect-src": ["'self'"], "font-src": ["'self'"], "object-src": ["'none'"],
        "base-uri": ["'self'"], "form-action": ["'self'"], "frame-ancestors": ["'none'"],
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["accounts.permissions.RolePermission"],
    # JSON bodies only: the threat screen reads JSON, and a form cannot carry the API's objects and lists.
    # The credential exchanges (accounts/api.py) take a form too.
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "blaze_site.schema.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "core.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "core.http_errors.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=int(os.environ.get("JWT_ACCESS_MINUTES", "15"))),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "SIGNING_KEY": SECRET_KEY,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Blaze API",
    "DESCRIPTION": "Control plane and inference API for Blaze.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "blaze_site.schema.document_refusals"],
    # Swagger UI and ReDoc served from the installed sidecar package: the machine may be offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", BASE_DIR / "staticfiles"))
# plotly.js for the charts comes from the installed `plotly` package (no CDN: Blaze may run offline).
STATICFILES_DIRS = [
    BASE_DIR / "static", ("vendor/plotly", Path(importlib.util.find_spec("plotly").origin).parent / "package_data"),
]
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
MEDIA_URL = "media/"
# Serve from the finders when collectstatic has not run (development, tests).
SERVESTATIC_USE_FINDERS = True

# Tracing (core/tracing.py): on when an OTLP endpoint is named; the SDK reads the OTEL_* variables.
TRACING = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
# The share of requests traced (0-1); a request that arrives with a sampled `traceparent` always is.
BLAZE_TRACE_SAMPLE_RATIO = float(os.environ.get("BLAZE_TRACE_SAMPLE_RATIO", "1"))
# A span per Redis command too: off by default, they cost more than they tell (docs/benchmarks.md).
BLAZE_TRACE_REDIS = env_bool("BLAZE_TRACE_REDIS")
# A trace viewer's page for one trace, "{trace_id}" in it (Jaeger: http://jaeger:16686/trace/{trace_id}):
# the playground's answer stats and the Requests page link there.
BLAZE_TRACE_URL = os.environ.get("BLAZE_TRACE_URL", "")

# JSON lines by default (for log shippers); BLAZE_LOG_FORMAT=text for a person reading a terminal.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "core.logs.RequestIdFilter"}},
    "formatters": {
        "json": {"()": "core.logs.BlazeJsonFormatter"},
        "text": {"format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s %(trace_id)s] %(message)s"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler", "filters": ["request_id"],
            "formatter": "text" if os.environ.get("BLAZE_LOG_FORMAT", "json") == "text" else "json",
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
}

# Rate limiting (ratelimits/): the policies themselves are rows, edited on /ratelimits/ or /api/ratelimits/.
BLAZE_RATELIMIT_POLICY_CACHE_SECONDS = float(os.environ.get("BLAZE_RATELIMIT_POLICY_CACHE_SECONDS", "2"))
# Each web process keeps the IP block list, and /v1 the API keys and model plans it looked up, while a
# Redis token says nothing changed (core/lookups.py); this bounds an entry's life if a change
# could not be announced.
BLAZE_LOOKUP_CACHE_SECONDS = float(os.environ.get("BLAZE_LOOKUP_CACHE_SECONDS", "60"))
BLAZE_RATELIMIT_TARGET_LATENCY_SECONDS = float(os.environ.get("BLAZE_RATELIMIT_TARGET_LATENCY_SECONDS", "5"))
BLAZE_RATELIMIT_ADAPTIVE_FLOOR = float(os.environ.get("BLAZE_RATELIMIT_ADAPTIVE_FLOOR", "0.1"))

# Edge protection (security/): body size, threat patterns, IP block list. docs/configuration.md says why.
# 32 MiB: the image edit endpoint takes a 20 MB image, which is 27 MB once base64-encoded in JSON.
BLAZE_MAX_REQUEST_BYTES = int(os.environ.get("BLAZE_MAX_REQUEST_BYTES", str(32 << 20)))
# Django's own cap on a body read into memory follows ours, so one number decides how big a request may be.
DATA_UPLOAD_MAX_MEMORY_SIZE = BLAZE_MAX_REQUEST_BYTES
BLAZE_AUTOBLOCK_DETECTIONS = int(os.environ.get("BLAZE_AUTOBLOCK_DETECTIONS", "5"))  # 0: never block automatically
BLAZE_AUTOBLOCK_WINDOW_SECONDS = int(os.environ.get("BLAZE_AUTOBLOCK_WINDOW_SECONDS", "300"))
BLAZE_AUTOBLOCK_SECONDS = int(os.environ.get("BLAZE_AUTOBLOCK_SECONDS", "900"))
# Addresses or CIDR networks never blocked: by default the host Blaze runs on, where its operator (and
# its own health checks) come from, as fail2ban's ignoreip. Set it empty to exempt nobody.
BLAZE_BLOCK_EXEMPT_IPS = env_list("BLAZE_BLOCK_EXEMPT_IPS", "127.0.0.1/32,::1/128")

# Resilience (engines/resilience/): calls to remote hosts, circuit breakers and health checks.
# Per-phase timeouts of one upstream attempt; read is long because an LLM may think for minutes.
BLAZE_UPSTREAM_CONNECT_TIMEOUT = float(os.environ.get("BLAZE_UPSTREAM_CONNECT_TIMEOUT", "5"))
BLAZE_UPSTREAM_READ_TIMEOUT = float(os.environ.get("BLAZE_UPSTREAM_READ_TIMEOUT", "300"))
BLAZE_UPSTREAM_POOL_TIMEOUT = float(os.environ.get("BLAZE_UPSTREAM_POOL_TIMEOUT", "5"))
BLAZE_UPSTREAM_MAX_CONNECTIONS = int(os.environ.get("BLAZE_UPSTREAM_MAX_CONNECTIONS", "100"))  # per host and process
BLAZE_UPSTREAM_KEEPALIVE_SECONDS = float(os.environ.get("BLAZE_UPSTREAM_KEEPALIVE_SECONDS", "30"))
BLAZE_RETRY_ATTEMPTS = int(os.environ.get("BLAZE_RETRY_ATTEMPTS", "3"))
BLAZE_RETRY_BASE_SECONDS = float(os.environ.get("BLAZE_RETRY_BASE_SECONDS", "0.5"))
BLAZE_RETRY_MAX_DELAY_SECONDS = float(os.environ.get("BLAZE_RETRY_MAX_DELAY_SECONDS", "10"))
BLAZE_BREAKER_FAILURE_THRESHOLD = int(os.environ.get("BLAZE_BREAKER_FAILURE_THRESHOLD", "5"))
BLAZE_BREAKER_FAILURE_RATE = float(os.environ.get("BLAZE_BREAKER_FAILURE_RATE", "0.5"))
BLAZE_BREAKER_WINDOW = int(os.environ.get("BLAZE_BREAKER_WINDOW", "20"))
BLAZE_BREAKER_MIN_CALLS = int(os.environ.get("BLAZE_BREAKER_MIN_CALLS", "10"))
BLAZE_BREAKER_RESET_SECONDS = float(os.environ.get("BLAZE_BREAKER_RESET_SECONDS", "30"))
BLAZE_BREAKER_SUCCESS_THRESHOLD = int(os.environ.get("BLAZE_BREAKER_SUCCESS_THRESHOLD", "2"))
BLAZE_BREAKER_HALF_OPEN_MAX_CALLS = int(os.environ.get("BLAZE_BREAKER_HALF_OPEN_MAX_CALLS", "1"))
BLAZE_HEALTH_CHECK_INTERVAL = float(os.environ.get("BLAZE_HEALTH_CHECK_INTERVAL", "30"))
BLAZE_HEALTH_CHECK_TIMEOUT = float(os.environ.get("BLAZE_HEALTH_CHECK_TIMEOUT", "5"))
BLAZE_HEALTH_UNHEALTHY_AFTER = int(os.environ.get("BLAZE_HEALTH_UNHEALTHY_AFTER", "3"))
BLAZE_HEALTH_DEGRADED_ERROR_RATE = float(os.environ.get("BLAZE_HEALTH_DEGRADED_ERROR_RATE", "0.2"))
BLAZE_HEALTH_DEGRADED_LATENCY_SECONDS = float(os.environ.get("BLAZE_HEALTH_DEGRADED_LATENCY_SECONDS", "30"))
BLAZE_HEALTH_WINDOW = int(os.environ.get("BLAZE_HEALTH_WINDOW", "20"))

# The live feed (dashboard/feed.py): one producer (`manage.py run_live_feed`) computes a snapshot every
# interval, over metrics of the last window, and keeps per-interval points for an hour and per-minute
# means for a day (Redis).
BLAZE_FEED_INTERVAL_SECONDS = float(os.environ.get("BLAZE_FEED_INTERVAL_SECONDS", "1"))
BLAZE_FEED_WINDOW_SECONDS = float(os.environ.get("BLAZE_FEED_WINDOW_SECONDS", "10"))
BLAZE_HISTORY_POINTS = int(os.environ.get("BLAZE_HISTORY_POINTS", "3600"))
BLAZE_HISTORY_MINUTES = int(os.environ.get("BLAZE_HISTORY_MINUTES", "1440"))
# Cluster metrics (telemetry/cluster.py): each process publishes its samples through Redis this often,
# under this host name (default: the machine's hostname; set it where pods or containers share one).
BLAZE_METRICS_PUSH_SECONDS = float(os.environ.get("BLAZE_METRICS_PUSH_SECONDS", "1"))
BLAZE_HOST_NAME = os.environ.get("BLAZE_HOST_NAME", "")
# The address people reach Blaze at, for links in alert notifications (Alertmanager's externalURL).
BLAZE_EXTERNAL_URL = os.environ.get("BLAZE_EXTERNAL_URL", "")
# Usage (usage/): events wait in a Redis stream of at most this many (the oldest go first) until the live
# feed's process stores them, every this many seconds; raw records are kept this many days, rollups for good.
# Off: no usage is recorded and no budget is checked (bench/usage.py measures what they cost).
BLAZE_USAGE_ENABLED = os.environ.get("BLAZE_USAGE_ENABLED", "1") not in ("0", "false", "off", "")
BLAZE_USAGE_STREAM_MAX = int(os.environ.get("BLAZE_USAGE_STREAM_MAX", "1000000"))
BLAZE_USAGE_PERSIST_SECONDS = float(os.environ.get("BLAZE_USAGE_PERSIST_SECONDS", "1"))
BLAZE_USAGE_RAW_DAYS = int(os.environ.get("BLAZE_USAGE_RAW_DAYS", "90"))
# Budgets' calendar days, weeks and months are this zone's; each web process reads the budgets again
# after this many seconds (a change in this process applies at once).
BLAZE_USAGE_TIME_ZONE = os.environ.get("BLAZE_USAGE_TIME_ZONE", "UTC")
BLAZE_BUDGET_CACHE_SECONDS = float(os.environ.get("BLAZE_BUDGET_CACHE_SECONDS", "2"))
# The Requests page's log of the last /v1 requests (telemetry/request_log.py), kept in Redis.
BLAZE_REQUEST_LOG_SIZE = int(os.environ.get("BLAZE_REQUEST_LOG_SIZE", "1000"))
