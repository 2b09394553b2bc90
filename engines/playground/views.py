from django.contrib.auth.decorators import login_required, permission_required
from django.db.models import Q
from django.shortcuts import render

from engines.models import Engine, Route


@login_required
@permission_required("engines.view_engine", raise_exception=True)
def playground(request):
    """Chat with an LLM engine or route, streamed over /ws/playground/, with Stop and per-answer stats."""
    routes = Route.objects.filter(enabled=True, targets__engine__kind=Engine.Kind.LLM).distinct().order_by("name")
    named = set(routes.values_list("name", flat=True))  # a route hides the engine of its name
    engines = Engine.objects.filter(Q(enabled=True), kind=Engine.Kind.LLM).exclude(name__in=named).order_by("name")
    return render(request, "playground/chat.html", {"routes": routes, "engines": engines})
