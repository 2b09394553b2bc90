"""A budget's soft limit alerts through the alerting everything else uses: the live feed publishes
where each budget stands, the built-in rule `budget-soft-limit` (there from the database's creation)
fires on it, and the receivers hear it fire and resolve. Nothing is refused at the soft limit."""

import time
from decimal import Decimal
from types import SimpleNamespace

import pytest

from accounts.audit import Actor
from alerts import evaluate as alerting
from alerts import notify
from alerts.models import AlertRule
from dashboard.feed import Feed
from tests.alerts.test_setup import Loopback, make_receiver
from tests.conftest import make_user
from usage import budgets, services

ACTOR = Actor.system("test")


@pytest.fixture
def hook(stream):
    budgets.forget()
    with Loopback() as loopback:
        yield loopback
        assert notify.drain(10), "a delivery was still running"
    budgets.forget()


def spend(budget, requests):
    """`requests` stored records settled on the budget, as usage/persist.py settles them."""
    period, _ = budgets.period_of(budget, time.time())
    for n in range(requests):
        record = SimpleNamespace(prompt_tokens=10, completion_tokens=5, cost=Decimal(0))
        budgets.settle({"id": f"hold-{n}", "budgets": [[f"{budget.pk}:{period}", budget.metric]]}, record)


def samples_of(budget):
    _, samples = Feed().step()
    return {sample.name: sample.value for sample in samples if sample.labels.get("budget") == budget.name}


def test_the_built_in_rule_is_there_from_the_start(db):
    rule = AlertRule.objects.get(name="budget-soft-limit")
    assert (rule.expression(), rule.for_seconds, rule.builtin, rule.enabled) == (
        "budget_soft_limit_reached == 1", 0, True, True)


def test_a_soft_limit_reached_fires_an_alert_to_the_receiver_and_refuses_nothing(hook):
    make_receiver(hook.url, send_resolved=True)
    owner = make_user("soft-owner", "viewer")
    budget = services.budget_create(actor=ACTOR, name="soft", scope="user", target_id=owner.pk, metric="requests",
                                    period="day", limit=10, soft_limit=3)
    spend(budget, 2)
    assert samples_of(budget) == {"budget_used_ratio": 0.2, "budget_soft_limit_reached": 0}
    alerting.evaluate(Feed().step()[1])
    assert notify.drain(10) and hook.received == []

    spend(budget, 1)
    samples = samples_of(budget)
    assert samples == {"budget_used_ratio": 0.3, "budget_soft_limit_reached": 1}
    [alert] = [a for a in alerting.evaluate(Feed().step()[1]) if a["rule"] == "budget-soft-limit"]
    assert alert["state"] == "firing" and alert["labels"]["budget"] == "soft"
    assert notify.drain(10)
    [notice] = hook.received
    assert notice["status"] == "firing" and notice["commonLabels"]["alertname"] == "budget-soft-limit"
    assert notice["alerts"][0]["annotations"]["summary"] == "Budget soft has reached its soft limit."
    # Only the hard limit refuses: seven more requests still fit.
    assert budgets.standing([budget])[budget.pk].remaining == 7

    # Raised above what is spent (as a new period would leave it): the alert resolves.
    services.budget_update(actor=ACTOR, budget=budget, soft_limit=5)
    budgets.forget()
    alerting.evaluate(Feed().step()[1])
    assert notify.drain(10)
    assert [notice["status"] for notice in hook.received] == ["firing", "resolved"]


def test_a_soft_limit_must_be_below_the_limit(client_for, admin_user):
    owner = make_user("soft-api", "viewer")
    body = {"name": "upside-down", "scope": "user", "target_id": owner.pk, "metric": "tokens", "period": "month",
            "limit": 100, "soft_limit": 100}
    response = client_for(admin_user).post("/api/usage/budgets/", body, format="json")
    assert response.status_code == 400 and "soft_limit" in response.json()["fields"]
    missing = client_for(admin_user).post("/api/usage/budgets/", {**body, "soft_limit": 50, "target_id": 999999},
                                          format="json")
    assert missing.status_code == 400 and missing.json()["fields"]["target_id"] == ["No user has id 999999."]
