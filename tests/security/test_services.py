"""Automatic blocks: enough detections from one address within the window block it, for a while."""

import time

from security.models import IpBlock

ATTACK = {"q": "' OR 1=1 --"}


def attack(client, times):
    for _ in range(times):
        assert client.get("/login/", ATTACK).status_code == 400


def test_repeated_attacks_block_the_address(client_at, settings, security_events):
    settings.BLAZE_AUTOBLOCK_DETECTIONS = 3
    attacker = client_at("203.0.113.40")

    attack(attacker, 3)

    assert attacker.get("/login/").status_code == 403
    assert client_at("203.0.113.41").get("/login/").status_code == 200
    assert security_events() == ["security.sql_injection"] * 3 + ["security.ip_blocked"]
    assert IpBlock.objects.get(network="203.0.113.40").source == "auto"


def test_automatic_block_lifts_when_it_expires(client_at, settings, db):
    settings.BLAZE_AUTOBLOCK_DETECTIONS, settings.BLAZE_AUTOBLOCK_SECONDS = 2, 1
    attacker = client_at("203.0.113.42")
    attack(attacker, 2)
    assert attacker.get("/login/").status_code == 403

    time.sleep(1.1)

    assert attacker.get("/login/").status_code == 200


def test_detections_further_apart_than_the_window_do_not_add_up(client_at, settings, db):
    settings.BLAZE_AUTOBLOCK_DETECTIONS, settings.BLAZE_AUTOBLOCK_WINDOW_SECONDS = 2, 1
    attacker = client_at("203.0.113.43")
    attack(attacker, 1)

    time.sleep(1.1)
    attack(attacker, 1)

    assert attacker.get("/login/").status_code == 200


def test_exempt_address_is_refused_but_never_blocked(client_at, settings, security_events):
    settings.BLAZE_AUTOBLOCK_DETECTIONS, settings.BLAZE_BLOCK_EXEMPT_IPS = 2, ["203.0.113.0/24"]
    attacker = client_at("203.0.113.44")

    attack(attacker, 3)

    assert attacker.get("/login/").status_code == 200
    assert "security.ip_blocked" not in security_events()


def test_zero_detections_setting_turns_automatic_blocks_off(client_at, settings, security_events):
    settings.BLAZE_AUTOBLOCK_DETECTIONS = 0
    attacker = client_at("203.0.113.45")

    attack(attacker, 6)

    assert attacker.get("/login/").status_code == 200


def test_the_operator_s_own_host_is_never_blocked_unless_configured_so(client_at, settings, security_events):
    settings.BLAZE_AUTOBLOCK_DETECTIONS = 2
    operator = client_at("127.0.0.1")  # the default exemption, as fail2ban's ignoreip

    attack(operator, 3)
    assert operator.get("/login/").status_code == 200
    assert "security.ip_blocked" not in security_events()

    settings.BLAZE_BLOCK_EXEMPT_IPS = []  # configured otherwise: loopback is an address like any
    attack(operator, 2)
    assert operator.get("/login/").status_code == 403


def test_health_checks_answer_a_blocked_address(client_at, settings, db):
    settings.BLAZE_AUTOBLOCK_DETECTIONS, settings.BLAZE_METRICS_ALLOW_IPS = 2, ["203.0.113.0/24"]
    checker = client_at("203.0.113.50")
    attack(checker, 2)
    assert checker.get("/login/").status_code == 403
    assert checker.get("/health").status_code == 200
    assert checker.get("/health/detailed").status_code in (200, 503)  # answered: its own verdict on the stack
