"""Access control, from the URL conf: every URL pattern (and WebSocket route) is requested by every
identity (anonymous, each role signed in, an API key of each scope) and the answer compared with
ACCESS, the declared table. A URL without an entry fails: a new endpoint states who may use it.

An entry is "METHOD who [scope]" per method tried: `who` the least role let in (anyone, viewer,
operator, admin, or `key` for /v1, which takes API keys only); `scope` the API-key scope an /api/
operation needs (absent: a page, which takes a signed-in session only). Each request runs in a
transaction rolled back after it, so a DELETE leaves the next identity something to ask about."""

import re
from datetime import timedelta

import pytest
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import Client
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import services as account_services
from accounts.audit import Actor
from alerts.models import AlertReceiver, AlertRule, AlertSilence
from blaze_site.asgi import application
from engines import services
from engines.models import Adapter, GeneratedImage, RouteTarget
from ratelimits.models import RateLimitPolicy
from security.models import IpBlock
from tests.conftest import PASSWORD, make_user
from tests.upstream import run
from usage.models import Budget, Price

pytestmark = [pytest.mark.django_db, pytest.mark.slow]

ACCESS = {
    # The OpenAI-compatible surface: API keys with the inference scope only.
    "v1-models": "GET key inference", "v1-chat": "POST key inference", "v1-completions": "POST key inference",
    "v1-embeddings": "POST key inference", "v1-images": "POST key inference",
    "v1-image-edits": "POST key inference",
    # Signing in and one's own account.
    "login": "GET anyone | POST anyone", "logout": "POST anyone", "account": "GET viewer",
    "password_change": "GET viewer | POST viewer", "mfa_enrol": "GET viewer", "mfa_confirm": "POST viewer",
    "mfa_disable": "POST viewer", "api_keys": "GET viewer | POST viewer", "api_key_revoke": "POST viewer",
    # People and the audit log: admins.
    "audit": "GET admin", "users": "GET admin | POST admin", "user_update": "GET admin | POST admin",
    "role_policy": "POST admin",
    "teams": "GET admin | POST admin", "team_edit": "GET admin | POST admin", "team_delete": "POST admin",
    "team_member_add": "POST admin", "team_member_remove": "POST admin",
    # Monitoring pages and probes.
    "overview": "GET viewer", "requests": "GET viewer", "request": "GET viewer", "health": "GET anyone",
    "health-detailed": "GET viewer read", "metrics": "GET viewer read", "metrics-prometheus": "GET viewer read",
    "errors-summary": "GET admin read",
    # Security: admins.
    "security:status": "GET admin", "security:block": "POST admin", "security:unblock": "POST admin",
    "security:api-status": "GET admin read", "security:ipblock-list": "GET admin read | POST admin manage",
    "security:ipblock-detail": "GET admin read | DELETE admin manage",
    # Rate limits: operators.
    "ratelimits:list": "GET operator", "ratelimits:create": "GET operator | POST operator",
    "ratelimits:edit": "GET operator | POST operator", "ratelimits:toggle": "POST operator",
    "ratelimits:delete": "POST operator", "ratelimits:api-list": "GET operator read | POST operator manage",
    "ratelimits:api-detail": "GET operator read | PATCH operator manage | DELETE operator manage",
    "ratelimits:api-usage": "GET operator read",
    # Engines, workers, routes: viewers look, operators change.
    "engines:list": "GET viewer", "engines:image": "GET viewer", "engines:workers": "GET viewer",
    "engines:worker_cache": "POST operator", "engines:routes": "GET viewer | POST operator",
    "engines:route": "GET viewer | POST operator", "engines:route_delete": "POST operator",
    "engines:route_target_add": "POST operator", "engines:route_target": "POST operator",
    "engines:route_target_toggle": "POST operator", "engines:route_target_remove": "POST operator",
    "engines:route_target_reset_breaker": "POST operator", "engines:create": "GET operator | POST operator",
    "engines:detail": "GET viewer", "engines:edit": "GET operator | POST operator",
    "engines:adapter_add": "POST operator", "engines:adapter_remove": "POST operator",
    "engines:toggle": "POST operator", "engines:unload": "POST operator", "engines:delete": "POST operator",
    "playground": "GET viewer", "engines:models": "GET viewer", "engines:model_download": "POST operator",
    "engines:model_download_cancel": "POST operator",
    # Alerts: viewers look, operators change.
    "alerts:list": "GET viewer", "alerts:pack": "POST operator", "alerts:rule-create": "POST operator",
    "alerts:rule": "GET viewer | POST operator", "alerts:rule-toggle": "POST operator",
    "alerts:rule-delete": "POST operator", "alerts:receiver-create": "POST operator",
    "alerts:receiver-toggle": "POST operator", "alerts:receiver-delete": "POST operator",
    "alerts:silence-create": "POST operator", "alerts:silence-expire": "POST operator",
    "api-alerts": "GET viewer read", "api-alert-pack": "POST operator manage",
    "alert-rule-list": "GET viewer read | POST operator manage",
    "alert-rule-detail": "GET viewer read | DELETE operator manage",
    "alert-receiver-list": "GET viewer read | POST operator manage",
    "alert-receiver-detail": "GET viewer read | DELETE operator manage",
    "alert-silence-list": "GET viewer read | POST operator manage",
    "alert-silence-detail": "GET viewer read", "alert-silence-expire": "POST operator manage",
    # The native API.
    "api-me": "GET viewer read", "api-audit": "GET admin read", "api-jwt": "POST anyone",
    "api-jwt-refresh": "POST anyone", "api-token": "POST anyone",
    "api-models": "GET viewer read", "api-models-inspect": "POST operator manage",
    "api-model-downloads": "GET viewer read | POST operator manage", "api-model-download": "GET viewer read",
    "api-model-download-cancel": "POST operator manage",
    "api-workers": "GET viewer read", "api-worker": "GET viewer read", "api-worker-cache": "POST operator manage",
    "api-metrics-history": "GET viewer read", "api-requests": "GET viewer read",
    "engine-list": "GET viewer read | POST operator manage",
    "engine-detail": "GET viewer read | PATCH operator manage | DELETE operator manage",
    "engine-adapter-list": "GET viewer read | POST operator manage",
    "engine-adapter-detail": "GET viewer read | PATCH operator manage | DELETE operator manage",
    "engine-disable": "POST operator manage", "engine-enable": "POST operator manage",
    "engine-unload": "POST operator manage",
    "route-list": "GET viewer read | POST operator manage",
    "route-detail": "GET viewer read | DELETE operator manage", "route-live-status": "GET viewer read",
    "route-target-list": "GET viewer read | POST operator manage",
    "route-target-detail": "GET viewer read | DELETE operator manage",
    "route-target-disable": "POST operator manage", "route-target-enable": "POST operator manage",
    "route-target-reset-breaker": "POST operator manage",
    "apikey-list": "GET viewer read | POST viewer manage", "apikey-detail": "GET viewer read",
    "apikey-revoke": "POST viewer manage",
    "user-list": "GET admin read | POST admin manage", "user-detail": "GET admin read | PATCH admin manage",
    # Teams: anyone reads their own (another team is a 404, an answer), admins read all and change them.
    "team-list": "GET viewer read | POST admin manage",
    "team-detail": "GET viewer read | PATCH admin manage | DELETE admin manage",
    "team-members": "POST admin manage", "team-member": "DELETE admin manage",
    # Usage: everyone reads their own (admins everyone's); prices are read by all, set by operators.
    "usage:page": "GET viewer", "usage:export": "GET viewer",
    "usage:api-usage": "GET viewer read", "usage:api-price-list": "GET viewer read | POST operator manage",
    "usage:api-price-detail": "GET viewer read | PATCH operator manage | DELETE operator manage",
    "usage:budgets": "GET operator", "usage:budget-create": "GET admin | POST admin",
    "usage:budget-edit": "GET admin | POST admin", "usage:budget-toggle": "POST admin",
    "usage:budget-delete": "POST admin",
    "usage:api-budget-list": "GET operator read | POST admin manage",
    "usage:api-budget-detail": "GET operator read | PATCH admin manage | DELETE admin manage",
    # The API's description is public: it holds no data, and clients are generated from it.
    "schema": "GET anyone", "api-docs": "GET anyone", "api-redoc": "GET anyone",
    "api-redoc-script": "GET anyone",
}
SECRETS = {"upstream key": "sk-upstream-7f3a9c0d1e", "totp secret": "3132333435363738393031323334353637383930",
           "password": PASSWORD}
WEBSOCKETS = {"/ws/dashboard/": "viewer", "/ws/playground/": "viewer"}
ROLES = ("viewer", "operator", "admin")
SCOPES = ("read", "inference", "manage")
IDENTITIES = ("anonymous", *ROLES, *(f"key:{scope}" for scope in SCOPES))


def url_patterns(patterns=None, namespace=""):
    """(name, pattern text) of every URL in the URL conf, names with their namespace."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from ((name, str(pattern.pattern) + text) for name, text in url_patterns(pattern.url_patterns, inner))
        else:
            yield f"{namespace}{pattern.name}", str(pattern.pattern)


def expected(rule, identity):
    """ok, login (not signed in: 401, or the sign-in page), or refused (403), for one identity."""
    who, _, scope = rule.partition(" ")
    if who == "anyone":
        return "ok"
    if identity == "anonymous":
        return "login"
    if identity.startswith("key:"):
        if not scope:
            return "login"  # pages take a session, never a key
        granted = {identity[4:]} | ({"read"} if identity == "key:manage" else set())
        return "ok" if scope in granted else "refused"
    if who == "key":
        return "login"  # /v1 takes keys, never a session
    return "ok" if ROLES.index(identity) >= ROLES.index(who) else "refused"


def outcome(response):
    if response.status_code >= 500:
        return f"server error {response.status_code}"
    if response.status_code == 401 or (response.status_code == 302 and "/login/" in response["Location"]
                                       and "next=" in response["Location"]):
        return "login"
    return "refused" if response.status_code == 403 else "ok"


@pytest.fixture
def world(db, tmp_path, settings):
    """One of everything a URL can name, each called "acl" or found by its pk; the path of each URL."""
    settings.MEDIA_ROOT = tmp_path
    settings.BLAZE_METRICS_ALLOW_IPS = []  # loopback may scrape metrics by default: here, identities alone count
    actor = Actor.system("test")
    owner = make_user("owner", "admin")
    engine = services.engine_create(actor=actor, name="acl", kind="llm", backend="remote",
                                    base_url="http://127.0.0.1:9/v1", api_key=SECRETS["upstream key"])
    TOTPDevice.objects.create(user=owner, name="phone", key=SECRETS["totp secret"], confirmed=True)
    account_services.team_member_add(actor=actor, team=account_services.team_create(actor=actor, name="acl"),
                                     user=owner)
    route = services.route_create(actor=actor, name="acl")
    target = services.route_target_add(actor=actor, route=route, engine=engine)
    assert isinstance(target, RouteTarget)
    Adapter.objects.create(name="acl", engine=engine, path="/nowhere/acl-adapter")
    image = GeneratedImage.objects.create(engine="acl", prompt="a cat", seed=1, file="images/acl.png")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "acl.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    AlertRule.objects.create(name="acl", series="route_error_ratio", comparator=">", threshold=0.5,
                             annotations={"summary": "x"})
    Price.objects.create(engine="acl")
    budget = Budget.objects.create(name="acl", scope="user", target_id=owner.pk, metric="requests", period="day",
                                   limit=10)
    pks = {
        "ratelimits": RateLimitPolicy.objects.create(name="acl", limit=1_000_000).pk,  # counts every request here
        "security": IpBlock.objects.create(network="203.0.113.7/32", reason="acl").pk,
        "receiver": AlertReceiver.objects.create(name="acl", url="http://127.0.0.1:9/hook").pk,
        "silence": AlertSilence.objects.create(matchers=[{"name": "alertname", "value": "acl", "isRegex": False}],
                                               ends_at=timezone.now() + timedelta(hours=1)).pk,
        "key": account_services.api_key_create(actor=actor, user=owner, name="acl", scopes=["read"])[0].pk,
        "user": owner.pk, "image": image.pk, "target": target.pk, "budget": budget.pk,
    }
    return {name: _path(name, text, pks) for name, text in url_patterns()}


def _pk_for(name, pks):
    for prefix, kind in (("ratelimits", "ratelimits"), ("security", "security"), ("alerts:receiver", "receiver"),
                         ("alert-receiver", "receiver"), ("alerts:silence", "silence"), ("alert-silence", "silence"),
                         ("api_key", "key"), ("apikey", "key"), ("user", "user"), ("engines:image", "image"),
                         ("engines:route_target", "target"), ("route-target", "target"),
                         ("usage:api-budget", "budget"), ("usage:budget-", "budget")):
        if name.startswith(prefix):
            return pks[kind]
    raise AssertionError(f"{name}: which object does its pk name?")


def _path(name, text, pks):
    values = {"name": "acl", "route_name": "acl", "worker_id": "w-acl", "request_id": "req-acl", "role": "viewer",
              "username": "owner", "engine": "acl", "download_id": "dl-acl", "engine_name": "acl",
              "adapter": "acl"}

    def value(param):
        return str(values[param] if param in values else _pk_for(name, pks))

    text = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: value(m[1]), text)  # re_path("(?P<pk>[0-9]+)")
    text = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: value(m[1]), text)  # path("<int:pk>/")
    return "/" + text.replace("^", "").replace("$", "")


@pytest.fixture
def clients(world):
    """{identity: a function giving a new test client acting as it} (new: a request may sign out);
    `.raw_keys` the API keys they send."""
    clients = Clients(anonymous=Client)
    for role in ROLES:
        user = make_user(f"acl-{role}", role)
        clients[role] = lambda user=user: _signed_in(user)
    admin = make_user("acl-keys", "admin")  # the key's scope is what limits it, not its owner's role
    for scope in SCOPES:
        _, raw = account_services.api_key_create(actor=Actor.system("test"), user=admin, name=f"acl {scope}",
                                                 scopes=[scope])
        clients[f"key:{scope}"] = lambda raw=raw: Client(headers={"Authorization": f"Bearer {raw}"})
        clients.raw_keys[f"API key ({scope})"] = raw
    return clients


class Clients(dict):
    raw_keys: dict

    def __init__(self, **clients):
        super().__init__(**clients)
        self.raw_keys = {}


def _signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def test_every_url_has_an_entry_in_the_access_table(world):
    assert sorted(set(world) - set(ACCESS)) == [], "new URLs: say who may use them in ACCESS"
    assert sorted(set(ACCESS) - set(world)) == [], "ACCESS names URLs that are gone"


def test_every_identity_gets_what_the_table_says_at_every_url(world, clients, caplog):
    wrong, leaks = [], []
    checked = 0
    for name, rules in ACCESS.items():
        for rule in rules.split(" | "):
            method, _, who = rule.partition(" ")
            for identity, client_for in clients.items():
                client = client_for()
                with transaction.atomic():
                    response = getattr(client, method.lower())(world[name], content_type="application/json") \
                        if method != "GET" else client.get(world[name])
                    transaction.set_rollback(True)
                checked += 1
                body = b"".join(response.streaming_content) if response.streaming else response.content
                leaks += [f"{what} in {method} {world[name]} as {identity}" for what, secret in
                          {**SECRETS, **clients.raw_keys}.items() if secret.encode() in body]
                got, want = outcome(response), expected(who, identity)
                if got != want:
                    wrong.append(f"{method} {world[name]} ({name}) as {identity}: {got} ({response.status_code}), "
                                 f"expected {want}")
    assert wrong == [], "\n".join(wrong)
    assert leaks == []
    assert [what for what, secret in {**SECRETS, **clients.raw_keys}.items() if secret in caplog.text] == []
    assert checked == sum(len(rules.split(" | ")) for rules in ACCESS.values()) * len(IDENTITIES)


@pytest.mark.django_db(transaction=True)
def test_websockets_take_signed_in_sessions_only():
    cookies = {}
    for role in ROLES:
        client = Client()
        client.force_login(make_user(f"ws-{role}", role))
        cookies[role] = f"sessionid={client.cookies['sessionid'].value}"

    async def knock(path, cookie):
        headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
        if cookie:
            headers.append((b"cookie", cookie.encode()))
        socket = WebsocketCommunicator(application, path, headers=headers)
        connected, _ = await socket.connect()
        await socket.disconnect()
        return connected

    for path, who in WEBSOCKETS.items():
        assert run(knock(path, None)) is False
        for role in ROLES:
            assert run(knock(path, cookies[role])) is (ROLES.index(role) >= ROLES.index(who)), (path, role)


# Credential exchanges: they read a username and password (or a refresh token) from the body and set
# no cookie, so a forged cross-site post gains nothing.
NO_CSRF = {"api-jwt", "api-jwt-refresh", "api-token"}


def test_every_form_and_session_write_needs_the_csrf_token(world):
    admin = make_user("csrf-admin", "admin")
    unguarded = []
    for name, rules in ACCESS.items():
        for rule in rules.split(" | "):
            method = rule.split(" ")[0]
            if method == "GET" or rule.endswith("key inference") or name in NO_CSRF:
                continue
            client = Client(enforce_csrf_checks=True)
            client.force_login(admin)
            with transaction.atomic():
                response = getattr(client, method.lower())(world[name], content_type="application/json")
                transaction.set_rollback(True)
            if response.status_code != 403 or b"CSRF" not in response.content:
                unguarded.append(f"{method} {world[name]} ({name}): {response.status_code}")
    assert unguarded == []
