"""From the `model` a client names to a Plan: the route of that name (a route wins over an engine of
the same name), else the engine. Unknown, disabled or wrong-kind models raise an ApplicationError."""

from dataclasses import dataclass

from django.db.models import Prefetch

from blaze_site import errors
from engines.models import Engine, Route, RouteTarget


@dataclass
class Plan:
    """What a `model` name resolves to: a route (its targets come prefetched with their engines), or
    an engine. `engine` validates the request: the engine itself, or the route's first enabled target
    (a route's targets are all of one kind)."""

    name: str
    engine: Engine
    route: Route | None = None


def resolve(name, kind):
    """The Plan for the model `name` of the endpoint's `kind` (the database is read here: call it
    thread-sensitive)."""
    if not isinstance(name, str) or not name:
        raise errors.InvalidInput("model: This field is required.", field="model")
    route = (
        Route.objects.filter(name=name)
        .prefetch_related(Prefetch("targets", queryset=RouteTarget.objects.select_related("engine")))
        .first()
    )
    if route is not None:
        if not route.enabled:
            raise errors.NotFound(f"The route '{name}' is disabled.", field="model", code="model_not_found")
        targets = route.targets.all()
        if not targets:
            raise errors.Unavailable(f"The route '{name}' has no targets.", field="model")
        engine = next((t.engine for t in targets if t.enabled and t.engine.enabled), targets[0].engine)
        _check_kind(name, engine.kind, kind)
        return Plan(name=name, engine=engine, route=route)
    engine = Engine.objects.filter(name=name).first()
    if engine is None or not engine.enabled:
        raise errors.NotFound(f"The model '{name}' does not exist or is disabled.", field="model",
                              code="model_not_found")
    _check_kind(name, engine.kind, kind)
    return Plan(name=name, engine=engine)


def _check_kind(name, found, wanted):
    if found != wanted:
        raise errors.InvalidInput(f"The model '{name}' is a {found} engine, not {wanted}.", field="model")
