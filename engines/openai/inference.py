"""One inference request's path after its entry knows who asks: the same for /v1's views (HTTP) and
the playground's socket, which call these in this order.

- `prepare`: the Plan the `model` names (kept by `lookups` while nothing changed), the body checked
  against the caps of that engine (a route: its first enabled target's), the LoRA adapter it names
  put in the payload, and the request log told the model, the route, the adapter and the prompt.
- `serve`: `failover.serve`, the first target (or fallback) that answers: a Served.
- `events`: a local engine's stream events as they arrive, closed however the reading ends; an
  `error` event raises the ApplicationError it carries.
- `refusal`: whatever stopped the request as the ApplicationError the client is told: a validation
  error names its field, Blaze's own Redis or database away is an outage.
- `observe`: the request in the per-model series (metrics), once its status is known.
"""

from collections.abc import AsyncIterator
from functools import partial

from rest_framework.exceptions import ValidationError

from core import errors, lookups
from core.http_errors import OUTAGES, flatten, outage
from engines import contract
from engines.contract import Event
from engines.openai.protocol import REQUEST_SERIALIZERS
from engines.serving import failover
from engines.serving import plan as plans
from engines.serving.failover import Served
from engines.serving.request import InferenceRequest
from telemetry import metrics, request_log
from usage import budgets


async def prepare(request: InferenceRequest) -> None:
    """Resolve and validate: fills in `request.plan` and `request.data`; raises an ApplicationError or
    a ValidationError."""
    serializer_class, kind = REQUEST_SERIALIZERS[request.endpoint]
    name = request.body.get("model")
    plan = await lookups.cached("plan", (name, kind) if isinstance(name, str) else None, request.generation,
                                partial(plans.resolve, name, kind))
    request.plan = plan
    request_log.note(model=plan.name, route=plan.route.name if plan.route else None,
                     keep_prompts=bool(plan.route and plan.route.keep_prompts),
                     **({"adapter": plan.adapter.name} if plan.adapter else {}))
    serializer = serializer_class(data=request.body, context={"engine": plan.engine, "priority": request.priority})
    serializer.is_valid(raise_exception=True)
    request.data = serializer.validated_data
    if plan.adapter is not None:  # the worker runs the rows under it (contract.AdapterRef)
        request.data["payload"] = {**request.payload, "adapter": {"name": plan.adapter.name, "path": plan.adapter.path}}
    request_log.note_prompt(request.payload)


async def serve(request: InferenceRequest) -> Served:
    """Reserve the request's worst case on its budgets (usage/budgets.py: BudgetExceeded when one has
    no room), then serve it; a request no target answered gives its reservation back."""
    if request.source:
        request.hold = await budgets.areserve(request)
    try:
        served = await failover.serve(request)
    except BaseException:
        if request.hold is not None:
            await budgets.arelease(request.hold)
        raise
    request.fallback = served.fallback
    return served


async def events(served: Served) -> AsyncIterator[Event]:
    """A local engine's events (start, token, progress, done) as they arrive; an `error` event raises."""
    assert served.events is not None  # a local engine's streamed answer
    try:
        async for event in served.events:
            if event["type"] == contract.ERROR:
                raise contract.error_from(event)
            yield event
    finally:
        await served.events.aclose()


def refusal(exc: Exception) -> errors.ApplicationError:
    """The ApplicationError that `exc` (an ApplicationError, a ValidationError or one of OUTAGES) is
    answered with; anything else is raised again."""
    if isinstance(exc, errors.ApplicationError):
        return exc
    if isinstance(exc, OUTAGES):
        return outage(exc)
    if isinstance(exc, ValidationError):
        field, messages = next(iter(flatten(exc.detail).items()))
        return errors.InvalidInput(f"{field}: {messages[0]}", field=field)
    raise exc


def observe(request: InferenceRequest | None, status: int, seconds: float) -> None:
    """Count the request in its model's series; one whose model did not resolve makes none (junk names
    must not make series)."""
    if request is not None and request.model is not None:
        metrics.observe_model_request(request.model, status, seconds)
