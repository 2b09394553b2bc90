"""Usage events stored (usage/persist.py): once each however often delivered, with the cost of the
engine's price when stored, added into hourly and daily rollups, and not lost when the process that
read them died before storing them."""

from decimal import Decimal

from accounts.audit import Actor
from core import shared_state
from tests.conftest import make_user
from usage import events, persist, services
from usage.models import Price, UsageRecord, UsageRollup


def chat(event_id, engine="chat-engine", user_id=1, api_key_id=None, prompt=100, cached=40, completion=50,
         seconds=0.5):
    tags = events.tags(user_id=user_id, api_key_id=api_key_id, team_id=None, source="v1", endpoint="chat",
                       route="r")
    events.record(event_id, tags, engine=engine, worker="w1@test", prompt_tokens=prompt, cached_tokens=cached,
                  completion_tokens=completion, worker_seconds=seconds)


def test_an_event_delivered_twice_is_stored_once_and_rolled_up_once(stream):
    chat("req-1")
    chat("req-1")  # a task redelivered after its worker died, answered again
    chat("req-2", completion=10)
    assert persist.drain() == 2
    assert persist.drain() == 0
    # (Filtered by engine: a live feed process of another test may store its own events meanwhile.)
    assert UsageRecord.objects.filter(engine="chat-engine").count() == 2
    day = UsageRollup.objects.get(period="day", dimension="engine", value="chat-engine", user_id=0)
    hours = UsageRollup.objects.filter(period="hour", dimension="engine", value="chat-engine", user_id=0)
    assert (day.requests, day.prompt_tokens, day.cached_tokens, day.completion_tokens) == (2, 200, 80, 60)
    assert sum(hour.requests for hour in hours) == 2 and sum(hour.completion_tokens for hour in hours) == 60
    assert shared_state.client().xlen(shared_state.usage_events_key()) == 0  # stored events leave the stream


def test_the_cost_is_the_price_when_stored_and_a_later_price_change_rewrites_nothing(stream):
    actor = Actor.system("test")
    price = services.price_create(actor=actor, engine="chat-engine", currency="EUR",
                                  per_1m_prompt=Decimal("2"), per_1m_cached=Decimal("1"),
                                  per_1m_completion=Decimal("8"), per_worker_hour=Decimal("3.6"))
    chat("priced", prompt=1_000_000, cached=400_000, completion=500_000, seconds=10)
    persist.drain()
    # 600,000 uncached × 2/M + 400,000 × 1/M + 500,000 × 8/M + 10 s × 3.6/h = 1.2 + 0.4 + 4 + 0.01
    record = UsageRecord.objects.get(event="priced")
    assert (record.cost, record.currency) == (Decimal("5.61"), "EUR")
    services.price_update(actor=actor, price=price, per_1m_completion=Decimal("80"))
    chat("later", prompt=0, cached=0, completion=500_000, seconds=0)
    persist.drain()
    assert UsageRecord.objects.get(event="priced").cost == Decimal("5.61")
    assert UsageRecord.objects.get(event="later").cost == Decimal("40")
    assert UsageRollup.objects.get(period="day", dimension="engine", value="chat-engine", user_id=0).cost == Decimal(
        "45.61")
    # The same sums for the records' user alone, and under each of the other dimensions.
    assert UsageRollup.objects.get(period="day", dimension="engine", value="chat-engine", user_id=1).cost == Decimal(
        "45.61")
    assert UsageRollup.objects.get(period="day", dimension="route", value="r", user_id=0).requests == 2


def test_events_a_dead_reader_took_are_stored_by_the_next_drain(stream, monkeypatch):
    chat("taken")
    client = shared_state.client()
    persist._ensure_group(client)
    # A reader takes the event and dies before storing it: it stays pending in the group.
    client.xreadgroup(persist.GROUP, "dead-reader", {shared_state.usage_events_key(): ">"}, count=10)
    assert persist.drain() == 0  # not idle long enough: its reader may still be storing it
    monkeypatch.setattr(persist, "CLAIM_IDLE_MS", 0)
    assert persist.drain() == 1
    assert UsageRecord.objects.filter(event="taken").exists()


def test_old_raw_records_are_pruned_and_their_rollups_stay(stream, settings):
    chat("old")
    persist.drain()
    settings.BLAZE_USAGE_RAW_DAYS = 0
    assert persist.prune() >= 1
    assert not UsageRecord.objects.filter(engine="chat-engine").exists()
    assert UsageRollup.objects.get(period="day", dimension="engine", value="chat-engine", user_id=0).requests == 1


def test_the_api_groups_usage_and_shows_a_viewer_only_their_own(stream, client_for):
    admin, viewer = make_user("usage-admin", "admin"), make_user("usage-viewer", "viewer")
    chat("admin-1", user_id=admin.pk, engine="a")
    chat("viewer-1", user_id=viewer.pk, engine="b", completion=7)
    chat("viewer-2", user_id=viewer.pk, engine="b", completion=3)
    persist.drain()

    everyone = client_for(admin).get("/api/usage/", {"group_by": "user"}).json()
    ours = {row["group"]: row["completion_tokens"] for row in everyone["totals"]
            if row["group"] in (admin.pk, viewer.pk)}
    assert ours == {admin.pk: 50, viewer.pk: 10}  # (others' too, stored meanwhile by another test's feed)
    own = client_for(viewer).get("/api/usage/", {"group_by": "engine", "user": admin.pk}).json()
    assert [(row["group"], row["requests"], row["completion_tokens"]) for row in own["totals"]] == [("b", 2, 10)]
    assert own["series"][0]["requests"] == 2

    refused = client_for(viewer).get("/api/usage/", {"group_by": "colour"})
    assert refused.status_code == 400 and "group_by" in refused.json()["fields"]
    backwards = client_for(viewer).get("/api/usage/", {"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00Z"})
    assert backwards.status_code == 400 and "until" in backwards.json()["fields"]


def test_operators_set_prices_viewers_read_them_and_bad_input_names_the_field(db, client_for):
    operator, viewer = client_for(make_user("price-op", "operator")), client_for(make_user("price-viewer", "viewer"))
    created = operator.post("/api/usage/prices/", {"engine": "chat-engine", "per_1m_completion": 2.5},
                            format="json")
    assert created.status_code == 201, created.json()
    assert viewer.get("/api/usage/prices/chat-engine/").json()["per_1m_completion"] == 2.5
    assert viewer.patch("/api/usage/prices/chat-engine/", {"per_image": 1}, format="json").status_code == 403
    bad = operator.patch("/api/usage/prices/chat-engine/", {"currency": "euro", "per_image": -1}, format="json")
    assert bad.status_code == 400 and set(bad.json()["fields"]) == {"currency", "per_image"}
    text = operator.patch("/api/usage/prices/chat-engine/", {"per_1m_prompt": "2"}, format="json")
    assert text.status_code == 400 and text.json()["fields"] == {"per_1m_prompt": ["Expected a number."]}
    assert Price.objects.get(engine="chat-engine").per_image == 0
