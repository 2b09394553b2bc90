"""Where people see budgets: the Budgets page (admins change them, operators read them, viewers are
refused), the API keys page's "Budget left" column, and each budget's standing in the API."""

import re
import time
from decimal import Decimal
from types import SimpleNamespace

import pytest

from accounts.audit import Actor
from accounts.services import api_key_create, team_create
from tests.conftest import PASSWORD, make_user
from usage import budgets, services
from usage.models import Budget

ACTOR = Actor.system("test")


@pytest.fixture
def signed_in(client, stream):
    budgets.forget()

    def sign_in(user):
        assert client.login(username=user.username, password=PASSWORD)
        return client
    yield sign_in
    budgets.forget()


def spend(budget, amount):
    period, _ = budgets.period_of(budget, time.time())
    record = SimpleNamespace(prompt_tokens=amount, completion_tokens=0, cost=Decimal(0))
    budgets.settle({"id": "spent", "budgets": [[f"{budget.pk}:{period}", budget.metric]]}, record)


def text(response):
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def test_an_admin_creates_edits_and_deletes_a_budget_on_the_page(signed_in):
    admin = make_user("budget-admin", "admin")
    team = team_create(actor=ACTOR, name="research")
    page = signed_in(admin)
    form = page.get("/usage/budgets/new/").content.decode()
    assert f'<option value="team:{team.pk}">research</option>' in form

    fields = {"name": "research-month", "target": f"team:{team.pk}", "metric": "tokens", "period": "month",
              "limit": "1000", "soft_limit": "1000", "enabled": "on"}
    refused = page.post("/usage/budgets/new/", fields)
    assert refused.status_code == 400 and "The soft limit must be below the limit" in refused.content.decode()
    assert page.post("/usage/budgets/new/", {**fields, "soft_limit": "800"}).status_code == 302
    budget = Budget.objects.get(name="research-month")
    assert (budget.scope, budget.target_id, budget.limit, budget.soft_limit) == ("team", team.pk, 1000, 800)

    spend(budget, 250)
    listed = text(page.get("/usage/budgets/"))
    assert "research-month Team research tokens per month 1,000 800 250 0 750" in listed

    assert page.post(f"/usage/budgets/{budget.pk}/", {**fields, "limit": "2000", "soft_limit": ""}).status_code == 302
    budget.refresh_from_db()
    assert (budget.limit, budget.soft_limit) == (2000, None)
    assert "1,750" in text(page.get("/usage/budgets/"))  # the period's spend stays through an edit
    assert page.post(f"/usage/budgets/{budget.pk}/toggle/").status_code == 302
    assert Budget.objects.get(pk=budget.pk).enabled is False
    assert page.post(f"/usage/budgets/{budget.pk}/delete/").status_code == 302
    assert not Budget.objects.filter(pk=budget.pk).exists()


def test_operators_read_budgets_and_viewers_are_refused(signed_in):
    owner = make_user("budget-owner", "viewer")
    budget = services.budget_create(actor=ACTOR, name="owner-day", scope="user", target_id=owner.pk,
                                    metric="requests", period="day", limit=10)
    operator = signed_in(make_user("budget-operator", "operator"))
    page = operator.get("/usage/budgets/").content.decode()
    assert "owner-day" in page and "New budget" not in page and "Delete" not in page
    assert operator.post(f"/usage/budgets/{budget.pk}/delete/").status_code == 403
    assert operator.post("/usage/budgets/new/", {"name": "mine"}).status_code == 403
    assert signed_in(owner).get("/usage/budgets/").status_code == 403


def test_the_api_keys_page_shows_what_is_left_of_each_budget_a_key_counts_against(signed_in):
    owner = make_user("key-owner", "viewer")
    limited, _ = api_key_create(actor=ACTOR, user=owner, name="limited", scopes=["inference"])
    budget = services.budget_create(actor=ACTOR, name="per-key", scope="key", target_id=limited.pk,
                                    metric="tokens", period="day", limit=5000)
    services.budget_create(actor=ACTOR, name="per-owner", scope="user", target_id=owner.pk, metric="requests",
                           period="total", limit=100)
    spend(budget, 1200)
    page = text(signed_in(owner).get("/keys/"))
    assert "3,800 of 5,000 tokens per day" in page and "100 of 100 requests in total" in page


def test_the_api_says_where_each_budget_stands(signed_in, client_for):
    owner = make_user("api-owner", "viewer")
    budget = services.budget_create(actor=ACTOR, name="api-stand", scope="user", target_id=owner.pk,
                                    metric="tokens", period="total", limit=100, soft_limit=80)
    spend(budget, 30)
    operator = client_for(make_user("api-operator", "operator"))
    [row] = [row for row in operator.get("/api/usage/budgets/").json()["results"] if row["name"] == "api-stand"]
    assert row["soft_limit"] == 80 and row["standing"] == {"spent": 30, "reserved": 0, "remaining": 70,
                                                           "resets_at": None}
    assert operator.get(f"/api/usage/budgets/{budget.pk}/").json()["standing"]["remaining"] == 70
