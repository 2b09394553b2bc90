"""From the `model` a client names to a Plan: the route of that name (a route wins over an engine of
the same name), else the engine, else a LoRA adapter (by its own name, or `base:adapter`: the base
engine, running the request under the adapter). Unknown, disabled or wrong-kind models raise an
ApplicationError; an adapter the base does not have is a 400 naming `model`.

A route's fallbacks are resolved here too, each to its own Plan (a fallback route's own fallbacks
with it), so that serving them reads nothing from the database. A fallback that cannot serve this
request (disabled, of another kind, a loop back to a route already on the way) becomes a Plan with
`unavailable` saying why, and serving passes over it."""

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.db.models import Prefetch

from core import errors
from engines.models import Adapter, Engine, Route, RouteFallback, RouteTarget

if TYPE_CHECKING:
    from django.db.models import QuerySet


@dataclass
class Plan:
    """What a `model` name resolves to: a route (its targets come prefetched with their engines), or
    an engine. `engine` validates the request: the engine itself, or the route's first enabled target
    (a route's targets are all of one kind). `fallbacks`: a route's fallbacks' Plans, in order.
    `unavailable`: why this Plan, a fallback, cannot serve the request ("" when it can). `adapter`: the
    LoRA adapter the engine runs the request under (its name is then the Plan's)."""

    name: str
    engine: Engine | None
    route: Route | None = None
    fallbacks: tuple["Plan", ...] = ()
    unavailable: str = ""
    adapter: Adapter | None = None


def resolve(name: object, kind: str) -> Plan:
    """The Plan for the model `name` of the endpoint's `kind` (the database is read here: call it
    thread-sensitive)."""
    if not isinstance(name, str) or not name:
        raise errors.InvalidInput("model: This field is required.", field="model")
    base, colon, adapter_name = name.partition(":")
    if colon:
        return _adapter_plan(base, adapter_name, kind)
    route = _routes().filter(name=name).first()
    if route is not None:
        return _route_plan(route, kind, path=())
    engine = Engine.objects.filter(name=name).first()
    if engine is None and (adapter := Adapter.objects.select_related("engine").filter(name=name).first()):
        return _adapter_plan(adapter.engine.name, name, kind)
    if engine is None or not engine.enabled:
        raise errors.NotFound(f"The model '{name}' does not exist or is disabled.", field="model",
                              code="model_not_found")
    return _engine_plan(engine, kind)


def _routes() -> "QuerySet[Route]":
    return Route.objects.prefetch_related(
        Prefetch("targets", queryset=RouteTarget.objects.select_related("engine")),
        Prefetch("fallbacks", queryset=RouteFallback.objects.select_related("route_fallback", "engine_fallback")),
    )


def _route_plan(route: Route, kind: str, path: tuple[str, ...]) -> Plan:
    """`path`: the routes whose fallbacks led here, so that a loop ends instead of recursing."""
    name = route.name
    if not route.enabled:
        raise errors.NotFound(f"The route '{name}' is disabled.", field="model", code="model_not_found")
    fallbacks = tuple(_fallback_plan(row, kind, (*path, name)) for row in route.fallbacks.all())
    targets = route.targets.all()
    engines = [t.engine for t in targets if t.enabled and t.engine.enabled] or [t.engine for t in targets]
    engines += [fallback.engine for fallback in fallbacks if not fallback.unavailable]
    if not engines:
        raise errors.Unavailable(f"The route '{name}' has no targets.", field="model")
    _check_kind(name, engines[0].kind, kind)
    return Plan(name=name, engine=engines[0], route=route, fallbacks=fallbacks)


def _engine_plan(engine: Engine, kind: str) -> Plan:
    _check_kind(engine.name, engine.kind, kind)
    return Plan(name=engine.name, engine=engine)


def _adapter_plan(base: str, name: str, kind: str) -> Plan:
    """The base engine `base` running the request under its adapter `name`."""
    engine = Engine.objects.filter(name=base).first()
    if engine is None or not engine.enabled:
        raise errors.NotFound(f"The model '{base}' does not exist or is disabled.", field="model",
                              code="model_not_found")
    adapter = Adapter.objects.select_related("engine").filter(name=name).first()
    if adapter is None:
        raise errors.InvalidInput(f"Engine '{base}' has no adapter '{name}'.", field="model",
                                  code="adapter_not_found")
    if adapter.engine_id != engine.pk:
        raise errors.InvalidInput(f"The adapter '{name}' runs on engine '{adapter.engine.name}', not '{base}'.",
                                  field="model", code="adapter_base_mismatch")
    if not adapter.enabled:
        raise errors.NotFound(f"The adapter '{name}' is disabled.", field="model", code="model_not_found")
    _check_kind(engine.name, engine.kind, kind)
    return Plan(name=adapter.name, engine=engine, adapter=adapter)


def _fallback_plan(row: RouteFallback, kind: str, path: tuple[str, ...]) -> Plan:
    """A fallback's Plan; one that cannot serve this request says why in `unavailable`."""
    name = row.name
    try:
        if row.engine_fallback_id is not None:
            if not row.engine_fallback.enabled:
                return Plan(name=name, engine=None, unavailable=f"engine {name} disabled")
            return _engine_plan(row.engine_fallback, kind)
        if name in path:  # the rules refuse loops; two edits at once could still make one
            return Plan(name=name, engine=None, unavailable=f"a loop ({' → '.join((*path, name))})")
        return _route_plan(_routes().get(pk=row.route_fallback_id), kind, path)
    except errors.ApplicationError as exc:
        return Plan(name=name, engine=None, unavailable=exc.message)


def _check_kind(name: str, found: str, wanted: str) -> None:
    if found != wanted:
        raise errors.InvalidInput(f"The model '{name}' is a {found} engine, not {wanted}.", field="model")
