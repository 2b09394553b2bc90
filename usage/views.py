"""The Usage page: a chart over time and the top consumers, from the rollups (admins: everyone's;
everyone else: their own), with its CSV export; the Budgets page (operators read, admins change)."""

import csv
import datetime
import io

import redis
from django.contrib import messages
from django.contrib.auth.decorators import login_required, permission_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.audit import Actor
from accounts.models import ApiKey, Team, User
from core.errors import Conflict, InvalidInput

from . import budgets as budget_state
from . import selectors, services
from .forms import BudgetForm
from .models import Budget
from .serializers import GROUPS

DAYS = (1, 7, 30, 90)
SUMS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "embedding_inputs", "images",
        "worker_seconds", "cost")


def _query(request):
    """(period, group_by, days, errors): the page's filters; a value it does not know is named and the
    default used."""
    errors = {}
    period = request.GET.get("period", "day")
    if period not in ("hour", "day"):
        errors["period"], period = f"'{period}' is not hour or day.", "day"
    group_by = request.GET.get("group_by", "engine")
    if group_by not in GROUPS:
        errors["group_by"], group_by = f"'{group_by}' is not one of {', '.join(GROUPS)}.", "engine"
    try:
        days = int(request.GET.get("days", "30"))
        if days not in DAYS:
            raise ValueError
    except ValueError:
        errors["days"], days = f"Pick one of {', '.join(map(str, DAYS))} days.", 30
    return period, group_by, days, errors


def _usage(request, period, group_by, days):
    own = None if request.user.has_perm("usage.view_all_usage") else request.user.pk
    until = datetime.datetime.now(datetime.UTC)
    data = selectors.usage(period=period, group_by=group_by, since=until - datetime.timedelta(days=days), until=until,
                           user=own)
    names = _names(group_by, {row["group"] for row in data["totals"]})
    for row in [*data["series"], *data["totals"]]:
        row["label"] = names.get(row["group"], str(row["group"]) if row["group"] is not None else "(none)")
    return data, own is None


def _names(group_by, ids):
    ids = {each for each in ids if isinstance(each, int)}
    if group_by == "user":
        return dict(User.objects.filter(pk__in=ids).values_list("pk", "username"))
    if group_by == "api_key":
        return {key.pk: str(key) for key in ApiKey.objects.filter(pk__in=ids)}
    if group_by == "team":
        return dict(Team.objects.filter(pk__in=ids).values_list("pk", "name"))
    return {}


@login_required
def usage_page(request):
    period, group_by, days, errors = _query(request)
    data, everyone = _usage(request, period, group_by, days)
    chart = {"period": period, "series": [{"start": row["start"].isoformat(), "label": row["label"],
                                           "tokens": row["prompt_tokens"] + row["completion_tokens"],
                                           "requests": row["requests"], "cost": row["cost"]}
                                          for row in data["series"]]}
    return render(request, "usage/usage.html", {
        "period": period, "group_by": group_by, "days": days, "errors": errors, "everyone": everyone,
        "totals": data["totals"], "chart": chart, "groups": GROUPS, "day_choices": DAYS,
        "query": request.GET.urlencode(),
    }, status=400 if errors else 200)


@login_required
def usage_csv(request):
    period, group_by, days, errors = _query(request)
    if errors:
        return HttpResponse("\n".join(f"{field}: {message}" for field, message in errors.items()), status=400,
                            content_type="text/plain")
    data, _ = _usage(request, period, group_by, days)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["start", group_by, "currency", *SUMS])
    for row in data["series"]:
        label = row["label"]
        # A leading = + - @ makes spreadsheets evaluate the cell; a quote keeps it text.
        label = f"'{label}" if label[:1] in ("=", "+", "-", "@") else label
        writer.writerow([row["start"].isoformat(), label, row["currency"], *(row[name] for name in SUMS)])
    response = HttpResponse(out.getvalue(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="blaze-usage-{group_by}-{period}.csv"'
    return response


@permission_required("usage.view_budget", raise_exception=True)
def budgets_page(request):
    """Every budget, whom it counts and where its period stands (admins change them here)."""
    rows = list(Budget.objects.all())
    try:
        standings = budget_state.standing(rows)
    except redis.RedisError:
        standings = {}
    shown = []
    for budget in rows:
        standing = standings.get(budget.pk)
        shown.append({"budget": budget, "target": budget.target_name(), "standing": standing,
                      "spent": standing and budget.amount(standing.spent),
                      "left": standing and budget.amount(standing.remaining)})
    return render(request, "usage/budgets.html", {"rows": shown, "redis_down": bool(rows) and not standings})


def _budget_form(request, budget):
    form = BudgetForm(request.POST or None, instance=budget)
    if request.method == "POST" and form.is_valid():
        actor = Actor.from_request(request)
        try:
            if budget:
                stored = Budget.objects.get(pk=budget.pk)  # the form wrote onto its instance; diff the stored row
                budget = services.budget_update(actor=actor, budget=stored, **form.budget_fields())
                messages.success(request, f"Budget {budget.name} saved.")
            else:
                budget = services.budget_create(actor=actor, **form.budget_fields())
                messages.success(request, f"Budget {budget.name} created.")
        except (InvalidInput, Conflict) as exc:
            field = "target" if exc.field in ("scope", "target_id") else exc.field
            form.add_error(field if field in form.fields else None, exc.message)
        else:
            return redirect("usage:budgets")
    return render(request, "usage/budget_form.html", {"form": form, "budget": budget},
                  status=400 if form.errors else 200)


@permission_required("usage.add_budget", raise_exception=True)
def budget_create(request):
    return _budget_form(request, None)


@permission_required("usage.change_budget", raise_exception=True)
def budget_edit(request, pk):
    return _budget_form(request, get_object_or_404(Budget, pk=pk))


@permission_required("usage.change_budget", raise_exception=True)
@require_POST
def budget_toggle(request, pk):
    budget = get_object_or_404(Budget, pk=pk)
    services.budget_update(actor=Actor.from_request(request), budget=budget, enabled=not budget.enabled)
    messages.success(request, f"Budget {budget.name} {'enabled' if budget.enabled else 'disabled'}.")
    return redirect("usage:budgets")


@permission_required("usage.delete_budget", raise_exception=True)
@require_POST
def budget_delete(request, pk):
    budget = get_object_or_404(Budget, pk=pk)
    services.budget_delete(actor=Actor.from_request(request), budget=budget)
    messages.success(request, f"Budget {budget.name} deleted.")
    return redirect("usage:budgets")
