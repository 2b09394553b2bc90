"""Settings come from the environment: each test reads them in a fresh process with its own variables."""

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Variables the settings read; each test starts without them so the machine's own do not leak in.
SETTINGS_VARIABLES = (
    "DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "DEBUG", "SECRET_KEY",
    "ALLOWED_HOSTS", "BLAZE_HTTPS", "SECURE_COOKIES", "SECURE_HSTS_SECONDS", "BLAZE_BEHIND_PROXY",
    "CSRF_TRUSTED_ORIGINS", "DJANGO_SETTINGS_MODULE",
)


def environment(var_dir, **variables):
    env = {name: value for name, value in os.environ.items() if name not in SETTINGS_VARIABLES}
    return {**env, "BLAZE_VAR_DIR": str(var_dir), **variables}


def settings_in(var_dir, **variables):
    """The settings module's values as a process started with these variables sees them."""
    code = ("import json, blaze_site.settings as s; "
            "print(json.dumps({k: v for k, v in vars(s).items() if k.isupper()}, default=str))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environment(var_dir, **variables),
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def manage(var_dir, *args, **variables):
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=environment(var_dir, **variables),
                          capture_output=True, text=True)


def test_database_url_selects_postgresql(tmp_path):
    database = settings_in(tmp_path, DATABASE_URL="postgres://u:p@h:5432/db")["DATABASES"]["default"]
    assert (database["ENGINE"], database["NAME"], database["HOST"], database["USER"]) == (
        "blaze_site.postgresql", "db", "h", "u")  # Django's, quiet after a failed connection
    assert database["OPTIONS"]["connect_timeout"] == 3


def test_database_url_may_set_its_own_connect_timeout(tmp_path):
    database = settings_in(tmp_path, DATABASE_URL="postgres://u:p@h:5432/db?connect_timeout=10")
    assert database["DATABASES"]["default"]["OPTIONS"]["connect_timeout"] == 10


def test_without_database_url_sqlite_lives_in_the_var_dir(tmp_path):
    database = settings_in(tmp_path)["DATABASES"]["default"]
    assert database["ENGINE"] == "django.db.backends.sqlite3"
    assert database["NAME"] == str(tmp_path / "blaze.sqlite3")


def test_redis_url_reaches_cache_broker_and_channels(tmp_path):
    url = "redis://cache.example:6380/2"
    settings = settings_in(tmp_path, REDIS_URL=url)
    assert settings["CACHES"]["default"]["LOCATION"] == url
    assert settings["CELERY_BROKER_URL"] == url
    assert settings["CELERY_RESULT_BACKEND"] == url
    assert settings["CHANNEL_LAYERS"]["default"]["CONFIG"]["hosts"] == [url]


@pytest.mark.parametrize("value, debug", [(None, False), ("1", True), ("true", True), ("0", False), ("", False)])
def test_debug_is_off_unless_asked_for(tmp_path, value, debug):
    variables = {} if value is None else {"DEBUG": value}
    assert settings_in(tmp_path, **variables)["DEBUG"] is debug


def test_secret_key_is_generated_once_into_a_private_file(tmp_path):
    first = settings_in(tmp_path)["SECRET_KEY"]
    path = tmp_path / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == first
    assert len(first) >= 50
    assert settings_in(tmp_path)["SECRET_KEY"] == first


def test_secret_key_from_the_environment_is_used(tmp_path):
    assert settings_in(tmp_path, SECRET_KEY="from-the-environment")["SECRET_KEY"] == "from-the-environment"
    assert not (tmp_path / "secret_key").exists()


def test_allowed_hosts_come_from_the_environment(tmp_path):
    assert settings_in(tmp_path, ALLOWED_HOSTS="a.example, b.example")["ALLOWED_HOSTS"] == ["a.example", "b.example"]


def test_production_configuration_passes_the_deploy_check(tmp_path):
    done = manage(tmp_path, "check", "--deploy", "--fail-level", "WARNING",
                  SECRET_KEY=secrets.token_urlsafe(64), BLAZE_HTTPS="1", ALLOWED_HOSTS="blaze.example.com")
    assert done.returncode == 0, done.stdout + done.stderr


def test_models_and_migrations_agree(tmp_path):
    done = manage(tmp_path, "makemigrations", "--check", "--dry-run")
    assert done.returncode == 0, done.stdout + done.stderr
