"""Budgets that hold under concurrency: admission reserves a request's worst case on every budget it
counts against, atomically in Redis (lua/reserve.lua: all or none), and the record of what it used
settles the reservation to the actual amount when it is stored (`persist`, lua/settle.lua).

- The worst case: a request counts 1; its tokens, the prompt's UTF-8 bytes (a token is at least one
  byte; the chat template's markers allowed for) plus max_tokens × n; its cost, those tokens at the
  engine's price, plus its images. What a reservation holds while the request runs is never spent by
  another, so concurrent requests cannot overrun a budget: what ends up spent is at most the limit,
  unless a request used more than its worst case (a worker's time priced per hour, unknown before).
- A request that fails before any target answered gives its reservation back at once; one whose web
  process died gives it back when its hold expires (BLAZE_REQUEST_TIMEOUT_SECONDS + a minute).
- Periods are calendar days, weeks (from Monday) and months in BLAZE_USAGE_TIME_ZONE, or the budget's
  whole life; each period has its own Redis state, so a new period starts empty.
"""

import datetime
import logging
import time
import uuid
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from asgiref.sync import sync_to_async
from django import db
from django.conf import settings

from core import errors, shared_state

from .models import Budget, Price

log = logging.getLogger(__name__)
RESERVE = shared_state.Script(Path(__file__).parent / "lua" / "reserve.lua")
SETTLE = shared_state.Script(Path(__file__).parent / "lua" / "settle.lua")
PER_MESSAGE = 16  # tokens a chat template may add around each message (role markers and the like)


class BudgetExceeded(errors.RateLimited):
    """A hard budget has no room for the request; the message names it and when it resets."""


@dataclass(frozen=True)
class Hold:
    """A request's reservation: its id and, per budget, [period key, metric] (settled on store)."""

    id: str
    budgets: list[list[str]]
    remaining: Decimal | None  # the least room any of its budgets has left, after it


_cache: tuple[float, list[Budget], dict[str, Price]] | None = None


def _fresh() -> tuple[list[Budget], dict[str, Price]] | None:
    """The budgets and prices this process read, while fresh (no query: safe on the event loop)."""
    cache = _cache
    if cache is None or time.monotonic() - cache[0] > settings.BLAZE_BUDGET_CACHE_SECONDS:
        return None
    return cache[1], cache[2]


def _active() -> tuple[list[Budget], dict[str, Price]]:
    """The budgets and prices, read again once stale. The database not answering: those last read stay
    in force (read again after another cache time), and none read yet, none apply, so that /v1 goes on
    answering from its cached keys and plans through the outage (docs/usage.md says so)."""
    global _cache
    fresh = _fresh()
    if fresh is not None:
        return fresh
    try:
        _cache = (time.monotonic(), list(Budget.objects.filter(enabled=True)),
                  {price.engine: price for price in Price.objects.all()})
    except (db.OperationalError, db.InterfaceError) as exc:
        log.warning("Budgets kept as last read: the database does not answer (%s)", exc)
        _cache = (time.monotonic(), *(_cache[1:] if _cache is not None else ([], {})))
    return _cache[1], _cache[2]


def forget() -> None:
    """Drop this process's cache (after a change; other processes reload within the cache time)."""
    global _cache
    _cache = None


def period_of(budget: Budget, now: float) -> tuple[str, datetime.datetime | None]:
    """(the period's key part, when the next one starts: None for a total)."""
    if budget.period == Budget.Period.TOTAL:
        return "total", None
    local = datetime.datetime.fromtimestamp(now, zoneinfo.ZoneInfo(settings.BLAZE_USAGE_TIME_ZONE))
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if budget.period == Budget.Period.DAY:
        start, following = day, day + datetime.timedelta(days=1)
    elif budget.period == Budget.Period.WEEK:
        start = day - datetime.timedelta(days=day.weekday())
        following = start + datetime.timedelta(days=7)
    else:
        start = day.replace(day=1)
        following = (start + datetime.timedelta(days=32)).replace(day=1)
    return start.date().isoformat(), following.replace(tzinfo=start.tzinfo)


@dataclass(frozen=True)
class Standing:
    """Where a budget stands in its current period: spent (settled), reserved (held by requests in
    flight), what is left of the hard limit, and when the period ends (None: a total)."""

    spent: Decimal
    reserved: Decimal
    remaining: Decimal
    resets_at: datetime.datetime | None


def standing(budgets: list[Budget], now: float | None = None) -> dict[int, Standing]:
    """{budget id: Standing} of each budget, read in one round trip."""
    now = time.time() if now is None else now
    periods = [period_of(budget, now) for budget in budgets]
    pipe = shared_state.client().pipeline(transaction=False)
    for budget, (period, _) in zip(budgets, periods, strict=True):
        pipe.hmget(_keys(budget.pk, period)[0], "spent", "reserved")
    found = {}
    for budget, (_, resets), (spent, reserved) in zip(budgets, periods, pipe.execute(), strict=True):
        spent, reserved = Decimal(spent or 0), max(Decimal(reserved or 0), Decimal(0))
        found[budget.pk] = Standing(spent, reserved, max(budget.limit - spent - reserved, Decimal(0)), resets)
    return found


def of_keys(keys: list[Any]) -> dict[int, list[tuple[Budget, Standing]]]:
    """{key id: [(budget, its standing)]} of the enabled budgets each API key's requests count against:
    the key's own, its owner's and its team's, the least room left first."""
    active = enabled()
    mine = {key.pk: applicable(SimpleNamespace(api_key_id=key.pk, user_id=key.user_id, team_id=key.team_id), active)
            for key in keys}
    wanted = list({budget.pk: budget for found in mine.values() for budget in found}.values())
    standings = standing(wanted) if wanted else {}
    return {pk: sorted(((budget, standings[budget.pk]) for budget in found), key=lambda pair: pair[1].remaining)
            for pk, found in mine.items() if found}


def enabled() -> list[Budget]:
    """The enabled budgets, as admission reads them (cached for BLAZE_BUDGET_CACHE_SECONDS)."""
    return _active()[0]


def _keys(budget_id: int, period: str) -> list[str]:
    base = shared_state.key("budget", budget_id, period)
    return [base, f"{base}:expiry", f"{base}:amounts"]


def _worst(metric: str, request: Any, price: Price | None) -> Decimal:
    if metric == Budget.Metric.REQUESTS:
        return Decimal(1)
    body, payload = request.body, request.payload
    prompt = len(str(body.get("input") or body.get("prompt") or "").encode())
    for message in body.get("messages") or ():
        prompt += PER_MESSAGE + len(str(message.get("content") or "").encode())
    completion = (payload.get("max_tokens") or 0) * (payload.get("choices") or 1)
    if metric == Budget.Metric.TOKENS:
        return Decimal(prompt + completion)
    if price is None:
        return Decimal(0)
    images = (payload.get("n") or 1) if request.endpoint in ("image", "image_edit") else 0
    if request.endpoint == "embedding":
        return price.cost(embedding_tokens=prompt)
    return price.cost(prompt_tokens=prompt, completion_tokens=completion, images=images)


def applicable(request: Any, budgets: list[Budget]) -> list[Budget]:
    ids = {Budget.Scope.KEY: request.api_key_id, Budget.Scope.USER: request.user_id,
           Budget.Scope.TEAM: request.team_id}
    return [budget for budget in budgets if ids.get(budget.scope) is not None and ids[budget.scope] == budget.target_id]


async def areserve(request: Any) -> Hold | None:
    """Reserve the request's worst case on its budgets; None when it counts against none. Raises
    BudgetExceeded naming the budget without room."""
    budgets, prices = _fresh() or await sync_to_async(_active)()  # the thread hop only to read them again
    mine = applicable(request, budgets)
    if not mine:
        return None
    now = time.time()
    hold_id, keys, args, held = uuid.uuid4().hex, [], [], []
    price = prices.get(request.plan.engine.name) if request.plan and request.plan.engine else None
    for budget in mine:
        period, _ = period_of(budget, now)
        keys += _keys(budget.pk, period)
        args += [str(budget.limit), str(_worst(budget.metric, request, price))]
        held.append([f"{budget.pk}:{period}", budget.metric])
    reply = await RESERVE.arun(keys, [hold_id, now, now + settings.BLAZE_REQUEST_TIMEOUT_SECONDS + 60, *args])
    if int(reply[0]):
        budget = mine[int(reply[0]) - 1]
        _, resets = period_of(budget, now)
        when = f"it resets at {resets.isoformat(timespec='minutes')}" if resets else "it does not reset"
        raise BudgetExceeded(f"Budget '{budget.name}' ({budget.amount(budget.limit)} {budget.metric} "
                             f"{budget.get_period_display().lower()}) has no room for this request; {when}.",
                             code="budget_exceeded")
    return Hold(hold_id, held, min(Decimal(str(left)) for left in reply[1:]))


async def arelease(hold: Hold) -> None:
    """Give a hold's reservation back (its request used nothing)."""
    for budget_period, _ in hold.budgets:
        budget_id, period = budget_period.split(":", 1)
        await SETTLE.arun(_keys(int(budget_id), period), [hold.id, 0])


def settle(hold: dict[str, Any], record: Any) -> None:
    """Settle a stored record's hold on each of its budgets to what the record used."""
    used = {Budget.Metric.REQUESTS: Decimal(1),
            Budget.Metric.TOKENS: Decimal(record.prompt_tokens + record.completion_tokens),
            Budget.Metric.COST: record.cost}
    for budget_period, metric in hold["budgets"]:
        budget_id, period = budget_period.split(":", 1)
        SETTLE.run(_keys(int(budget_id), period), [hold["id"], str(used[metric])])
