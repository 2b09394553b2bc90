"""The route pages: every route (and a form for a new one), and one route with its settings, its
targets and a live table that polls …/status/ every second. Input is parsed by the API's serializers
and written by the same services, so the page and the API agree on every rule."""

import re

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.audit import Actor
from core.errors import InvalidInput
from core.http_errors import flatten
from engines import services
from engines.heartbeats import live_workers
from engines.models import Engine, Route, RouteTarget
from engines.selectors import route_history, route_status
from engines.selectors import route_list as select_routes
from engines.serializers import RouteSerializer, RouteTargetSerializer


def _apply(serializer, write):
    """(result, {}) once the input parses and the write succeeds, else (None, {field: [message]})."""
    if not serializer.is_valid():
        errors = {}
        for name, messages in flatten(serializer.errors).items():  # "fallbacks.2" shows under its field
            errors.setdefault(name.partition(".")[0], []).extend(messages)
        return None, errors
    try:
        return write(serializer.validated_data), {}
    except InvalidInput as exc:
        return None, {exc.field: [exc.message]}


def _route_fields(post):
    """The form's values as sent (shown again on an error); `_parsed` makes them the API's input."""
    fields = {name: post[name] for name in ("name", "strategy", "sticky_ttl_seconds", "description", "fallbacks")
              if name in post}
    return {**fields, "keep_prompts": "keep_prompts" in post}  # an unticked box sends nothing


def _parsed(values):
    """The fallbacks' text ("backup, far-llm", in order) as the API's list of names."""
    if "fallbacks" not in values:
        return values
    return {**values, "fallbacks": [name for name in re.split(r"[\s,]+", values["fallbacks"]) if name]}


@permission_required("engines.view_route", raise_exception=True)
def route_list(request):
    errors, values = {}, {"strategy": Route.Strategy.ROUND_ROBIN, "sticky_ttl_seconds": 300}
    if request.method == "POST":
        if not request.user.has_perm("engines.add_route"):
            raise PermissionDenied
        values = _route_fields(request.POST)
        route, errors = _apply(RouteSerializer(data=_parsed(values)), lambda data: services.route_create(
            actor=Actor.from_request(request), **data))
        if route:
            messages.success(request, f"Route {route.name} created. Add its targets.")
            return redirect(route)
    return render(request, "engines/routes.html", {
        "routes": select_routes(), "strategies": Route.Strategy.choices, "values": values, "errors": errors,
    }, status=400 if errors else 200)


def _detail(request, route, status=200, **forms):
    live = route_status(route)
    return render(request, "engines/route.html", {
        "route": route, "rows": live["targets"], "live_error": live.get("error", ""),
        "strategies": Route.Strategy.choices, "engines": Engine.objects.order_by("name"),
        "workers": [] if live.get("error") else [worker["id"] for worker in live_workers() if not worker["lost"]],
        "fallbacks": route.fallbacks.select_related("route_fallback", "engine_fallback"),
        "history": route_history(route), "values": route.audit_fields(), "errors": {},
        "target_values": {}, "target_errors": {}, **forms,
    }, status=status)


@permission_required("engines.view_route", raise_exception=True)
def route_detail(request, name):
    route = get_object_or_404(Route, name=name)
    if request.method != "POST":
        return _detail(request, route)
    if not request.user.has_perm("engines.change_route"):
        raise PermissionDenied
    values = {**_route_fields(request.POST), "enabled": "enabled" in request.POST}
    saved, errors = _apply(RouteSerializer(route, data=_parsed(values), partial=True),
                           lambda data: services.route_update(actor=Actor.from_request(request), route=route, **data))
    if errors:
        route.refresh_from_db()
        return _detail(request, route, status=400, values={**route.audit_fields(), **values}, errors=errors)
    messages.success(request, f"Route {saved.name} saved.")
    return redirect(saved)


@permission_required("engines.delete_route", raise_exception=True)
@require_POST
def route_delete(request, name):
    route = get_object_or_404(Route, name=name)
    services.route_delete(actor=Actor.from_request(request), route=route)
    messages.success(request, f"Route {name} deleted.")
    return redirect("engines:routes")


@permission_required("engines.change_route", raise_exception=True)
@require_POST
def route_target_add(request, name):
    route = get_object_or_404(Route, name=name)
    values = {key: request.POST.get(key, "") for key in ("engine", "worker", "weight")}
    target, errors = _apply(RouteTargetSerializer(data=values), lambda data: services.route_target_add(
        actor=Actor.from_request(request), route=route, **data))
    if errors:
        return _detail(request, route, status=400, target_values=values, target_errors=errors)
    messages.success(request, f"Target {target} added.")
    return redirect(route)


def _target(name, target_pk):
    return get_object_or_404(RouteTarget.objects.select_related("route", "engine"), route__name=name, pk=target_pk)


@permission_required("engines.change_route", raise_exception=True)
@require_POST
def route_target_edit(request, name, target_pk):
    target = _target(name, target_pk)
    saved, errors = _apply(
        RouteTargetSerializer(target, data={"weight": request.POST.get("weight", "")}, partial=True),
        lambda data: services.route_target_update(actor=Actor.from_request(request), target=target, **data),
    )
    if errors:
        target.refresh_from_db()
        messages.error(request, f"Target {target}: {next(iter(errors.values()))[0]}")
        return _detail(request, target.route, status=400)
    messages.success(request, f"Target {saved} now has weight {saved.weight}.")
    return redirect(target.route)


@permission_required("engines.change_route", raise_exception=True)
@require_POST
def route_target_toggle(request, name, target_pk):
    target = _target(name, target_pk)
    services.route_target_update(actor=Actor.from_request(request), target=target, enabled=not target.enabled)
    messages.success(request, f"Target {target} {'enabled' if target.enabled else 'disabled'}.")
    return redirect(target.route)


@permission_required("engines.change_route", raise_exception=True)
@require_POST
def route_target_remove(request, name, target_pk):
    target = _target(name, target_pk)
    route = target.route
    services.route_target_remove(actor=Actor.from_request(request), target=target)
    messages.success(request, f"Target {target} removed.")
    return redirect(route)


@permission_required("engines.change_route", raise_exception=True)
@require_POST
def route_target_reset_breaker(request, name, target_pk):
    target = _target(name, target_pk)
    services.route_target_reset_breaker(actor=Actor.from_request(request), target=target)
    messages.success(request, f"The circuit breaker of {target} is closed.")
    return redirect(target.route)
