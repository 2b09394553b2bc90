from django.contrib.auth.decorators import login_required, permission_required
from django.shortcuts import render

from engines.models import Engine, Route

MODES = ("chat", "compare", "embed", "images")
KINDS = {"embed": Engine.Kind.EMBEDDING, "images": Engine.Kind.DIFFUSION}


def _models(kind):
    """(routes, engines) of that kind the page offers: enabled, a route hiding the engine of its name."""
    routes = Route.objects.filter(enabled=True, targets__engine__kind=kind).distinct().order_by("name")
    named = set(routes.values_list("name", flat=True))
    return routes, Engine.objects.filter(enabled=True, kind=kind).exclude(name__in=named).order_by("name")


@login_required
@permission_required("engines.view_engine", raise_exception=True)
def playground(request):
    """Chat with an LLM engine or route, compare two to four side by side, compare texts' embeddings, or
    make images with live progress: everything goes over /ws/playground/."""
    mode = request.GET.get("mode") if request.GET.get("mode") in MODES else "chat"
    routes, engines = _models(KINDS.get(mode, Engine.Kind.LLM))
    return render(request, "playground/playground.html", {"mode": mode, "routes": routes, "engines": engines})
