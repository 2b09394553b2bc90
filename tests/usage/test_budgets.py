"""Budgets (usage/budgets.py): the hard limit holds under concurrency, reservations settle to what
was used when its record is stored, a dead request's hold gives its room back when it expires, and
periods are calendar days, weeks and months in the configured time zone."""

import asyncio
import datetime
import time
import zoneinfo
from decimal import Decimal
from types import SimpleNamespace

import pytest

from core import shared_state
from usage import budgets, events, persist
from usage.models import Budget

# Transactional: admission reads the budgets on another thread, which sees committed rows only.
pytestmark = pytest.mark.django_db(transaction=True)
NOON = datetime.datetime(2026, 12, 9, 12, tzinfo=datetime.UTC).timestamp()  # a Wednesday


def request(user_id, max_tokens=10, content="hello"):
    """What admission reads of an InferenceRequest."""
    return SimpleNamespace(api_key_id=None, user_id=user_id, team_id=None, endpoint="chat",
                           body={"messages": [{"role": "user", "content": content}]},
                           payload={"max_tokens": max_tokens}, plan=SimpleNamespace(engine=SimpleNamespace(name="e")))


async def admit_all(requests):
    async def one(each):
        try:
            return await budgets.areserve(each)
        except budgets.BudgetExceeded as exc:
            return exc
    return await asyncio.gather(*(one(each) for each in requests))


def state(budget, now=None):
    period, _ = budgets.period_of(budget, now or time.time())
    values = shared_state.client().hgetall(shared_state.key("budget", budget.pk, period))
    return {name: float(value) for name, value in values.items()}


@pytest.fixture
def fresh(stream, settings):
    budgets.forget()
    yield
    budgets.forget()


def test_fifty_at_once_against_room_for_ten_admit_ten_and_settle_to_what_they_used(fresh):
    budget = Budget.objects.create(name="ten", scope="user", target_id=7, metric="requests", period="day", limit=10)
    outcomes = asyncio.run(admit_all([request(7) for _ in range(50)]))
    holds = [each for each in outcomes if isinstance(each, budgets.Hold)]
    refused = [each for each in outcomes if isinstance(each, budgets.BudgetExceeded)]
    assert (len(holds), len(refused)) == (10, 40)
    assert refused[0].code == "budget_exceeded" and "Budget 'ten' (10 requests per day)" in refused[0].message
    assert sorted(hold.remaining for hold in holds) == list(range(10))
    assert state(budget) == {"reserved": 10.0}
    for index, hold in enumerate(holds):  # each request's record, as its worker writes it
        tags = {**events.tags(user_id=7, api_key_id=None, team_id=None, source="v1", endpoint="chat", route=None),
                "hold": {"id": hold.id, "budgets": hold.budgets}}
        events.record(f"budget-{index}", tags, engine="e", prompt_tokens=3, completion_tokens=4)
    persist.drain()
    assert state(budget) == {"reserved": 0.0, "spent": 10.0}
    assert isinstance(asyncio.run(admit_all([request(7)]))[0], budgets.BudgetExceeded)  # still full


def test_tokens_reserve_the_worst_case_and_settle_to_the_actual(fresh):
    budget = Budget.objects.create(name="tokens", scope="user", target_id=8, metric="tokens", period="total",
                                   limit=100)
    [hold] = asyncio.run(admit_all([request(8, max_tokens=50, content="x" * 20)]))
    # 20 prompt bytes + 16 for the template + 50 completion tokens held, until the record says 9 + 12.
    assert hold.remaining == Decimal(100 - 86) and state(budget) == {"reserved": 86.0}
    tags = {**events.tags(user_id=8, api_key_id=None, team_id=None, source="v1", endpoint="chat", route=None),
            "hold": {"id": hold.id, "budgets": hold.budgets}}
    events.record("tokens-1", tags, engine="e", prompt_tokens=9, completion_tokens=12)
    persist.drain()
    assert state(budget) == {"reserved": 0.0, "spent": 21.0}


def test_a_hold_whose_request_died_gives_its_room_back_when_it_expires(fresh, settings):
    Budget.objects.create(name="one", scope="user", target_id=9, metric="requests", period="day", limit=1)
    settings.BLAZE_REQUEST_TIMEOUT_SECONDS = -61  # the hold expires at once: as if its web process died
    assert isinstance(asyncio.run(admit_all([request(9)]))[0], budgets.Hold)
    settings.BLAZE_REQUEST_TIMEOUT_SECONDS = 60
    assert isinstance(asyncio.run(admit_all([request(9)]))[0], budgets.Hold)  # the first one's room came back
    assert isinstance(asyncio.run(admit_all([request(9)]))[0], budgets.BudgetExceeded)


def test_a_released_hold_frees_its_room_at_once(fresh):
    Budget.objects.create(name="release", scope="user", target_id=10, metric="requests", period="week", limit=1)
    [hold] = asyncio.run(admit_all([request(10)]))
    asyncio.run(budgets.arelease(hold))
    assert isinstance(asyncio.run(admit_all([request(10)]))[0], budgets.Hold)


@pytest.mark.parametrize(("period", "zone", "key", "resets"), [
    ("day", "UTC", "2026-12-09", "2026-12-10T00:00:00+00:00"),
    ("week", "UTC", "2026-12-07", "2026-12-14T00:00:00+00:00"),  # from Monday
    ("month", "UTC", "2026-12-01", "2027-01-01T00:00:00+00:00"),
    ("day", "Pacific/Auckland", "2026-12-10", "2026-12-11T00:00:00+13:00"),  # already the 10th there
    ("total", "UTC", "total", None),
])
def test_periods_are_calendar_ones_in_the_configured_zone(settings, period, zone, key, resets):
    settings.BLAZE_USAGE_TIME_ZONE = zone
    start, following = budgets.period_of(Budget(period=period), NOON)
    assert start == key and (following.isoformat() if following else None) == resets
    if following:
        assert following.tzinfo == zoneinfo.ZoneInfo(zone)
