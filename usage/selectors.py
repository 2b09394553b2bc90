"""Usage as pages and the API read it: sums over the hourly or daily rollups of one dimension, never
the raw records, so that a month of a busy service is a few hundred rows, not millions."""

import datetime
from typing import Any

from django.db.models import Sum

from .models import UsageRollup

SUMS = UsageRollup.SUMS
IDS = ("user", "api_key", "team")  # dimensions whose values are ids


def usage(*, period: str = "day", group_by: str = "engine", since: datetime.datetime | None = None,
          until: datetime.datetime | None = None, user: int | None = None) -> dict[str, Any]:
    """{"series": [{start, group, currency, *SUMS}], "totals": [{group, currency, *SUMS}]} for rollups
    starting in [since, until), everyone's or one `user`'s."""
    until = until or datetime.datetime.now(datetime.UTC)
    since = since or until - datetime.timedelta(days=30)
    rollups = UsageRollup.objects.filter(period=period, dimension=group_by, user_id=user or 0,
                                         start__gte=_floor(since, period), start__lt=until)
    sums = {name: Sum(name) for name in SUMS}
    series = [_row(row, group_by) for row in
              rollups.values("start", "value", "currency").annotate(**sums).order_by("start", "value")]
    totals: dict[tuple[Any, str], dict[str, Any]] = {}
    for row in series:  # the totals from the series: one query, not two
        total = totals.setdefault((row["group"], row["currency"]), {"group": row["group"], "currency": row["currency"],
                                                                    **dict.fromkeys(SUMS, 0)})
        for name in SUMS:
            total[name] += row[name]
    ordered = sorted(totals.values(),
                     key=lambda row: (-row["cost"], -(row["prompt_tokens"] + row["completion_tokens"])))
    for row in [*series, *ordered]:
        row["cost"] = str(row["cost"])
    return {"period": period, "group_by": group_by, "since": since, "until": until, "series": series,
            "totals": ordered}


def _floor(moment: datetime.datetime, period: str) -> datetime.datetime:
    moment = moment.astimezone(datetime.UTC).replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0) if period == "day" else moment


def _row(row: dict[str, Any], group_by: str) -> dict[str, Any]:
    value = row.pop("value")
    group: Any = (int(value) if value else None) if group_by in IDS else value
    return {"group": group, **row, "cost": row["cost"] or 0}
