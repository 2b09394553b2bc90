"""The workers page: every engine host, its memory, and the models in its cache, with cache controls."""

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from accounts.audit import Actor
from engines import services
from engines.contract import CacheRefusal, RuntimeLoadError
from engines.heartbeats import live_workers
from engines.models import Engine


@permission_required("engines.view_engine", raise_exception=True)
def worker_list(request):
    return render(request, "engines/workers.html", {
        "workers": live_workers(),
        "engines": Engine.objects.filter(backend=Engine.Backend.LOCAL, enabled=True).order_by("name"),
    })


@permission_required("engines.manage_cache", raise_exception=True)
@require_POST
def worker_cache_action(request, worker_id):
    action, name, actor = request.POST.get("action"), request.POST.get("engine", ""), Actor.from_request(request)
    try:
        if action == "load":
            engine = Engine.objects.filter(name=name, backend=Engine.Backend.LOCAL).first()
            if engine is None:
                messages.error(request, f"No local engine named {name!r}.")
                return redirect("engines:workers")
            entry = services.cache_load(actor=actor, worker_id=worker_id, engine=engine)
            messages.success(request, f"{name} is loaded on {worker_id} ({entry['bytes'] / 2**20:.0f} MiB).")
        elif action == "unload":
            services.cache_unload(actor=actor, worker_id=worker_id, engine_name=name)
            messages.success(request, f"{name} is unloaded from {worker_id}.")
        elif action == "evict":
            victim = services.cache_evict(actor=actor, worker_id=worker_id)
            messages.success(request,
                             f"Evicted {victim} from {worker_id}." if victim else f"{worker_id} holds no model.")
        else:
            messages.error(request, "Unknown action.")
    except (RuntimeLoadError, CacheRefusal, services.WorkerUnavailable) as exc:
        messages.error(request, str(exc))
    return redirect("engines:workers")
