from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.contrib.humanize.templatetags.humanize import intword
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.views.decorators.http import require_POST
from rest_framework import serializers as drf

from accounts.audit import Actor
from core.errors import InvalidInput
from core.http_errors import flatten
from engines import services
from engines.heartbeats import holding
from engines.models import Adapter, Engine
from engines.selectors import adapter_list, engine_history
from engines.selectors import engine_list as select_engines
from engines.serializers import CONFIG_SERIALIZERS, AdapterSerializer, EngineSerializer


@permission_required("engines.view_engine", raise_exception=True)
def engine_list(request):
    kind = request.GET.get("kind", "")
    engines = select_engines(kind=kind if kind in Engine.Kind.values else "", search=request.GET.get("q", "").strip())
    return render(request, "engines/list.html", {"engines": engines, "kinds": Engine.Kind.choices, "kind": kind})


@permission_required("engines.view_engine", raise_exception=True)
def engine_detail(request, name):
    engine = get_object_or_404(Engine, name=name)
    return _detail(request, engine)


def _detail(request, engine, adapter_values=None, adapter_errors=None):
    loaded = [{"worker": worker_id, **entry} for worker_id, entry in holding(engine.name)]
    return render(request, "engines/detail.html", {
        "engine": engine, "history": engine_history(engine), "loaded": loaded,
        "adapters": adapter_list(engine=engine), "takes_adapters": _takes_adapters(engine),
        "adapter_values": adapter_values or {}, "adapter_errors": adapter_errors or {},
    }, status=400 if adapter_errors else 200)


def _takes_adapters(engine):
    return engine.kind == Engine.Kind.LLM and engine.backend == Engine.Backend.LOCAL


@permission_required("engines.change_engine", raise_exception=True)
@require_POST
def adapter_add(request, name):
    """Register a LoRA adapter on the engine (its path checked on the live workers first)."""
    engine = get_object_or_404(Engine, name=name)
    values = {key: request.POST.get(key, "").strip() for key in ("name", "path", "description")}
    serializer = AdapterSerializer(data=values, context={"engine": engine})
    if not serializer.is_valid():
        return _detail(request, engine, values, flatten(serializer.errors))
    try:
        adapter = services.adapter_add(actor=Actor.from_request(request), engine=engine, **serializer.validated_data)
    except InvalidInput as exc:
        return _detail(request, engine, values, {exc.field or "name": [exc.message]})
    findings = serializer.findings
    messages.success(request, f"Adapter {adapter.name} added: ask for {engine.name}:{adapter.name} or {adapter.name}.")
    if findings.warning:
        messages.warning(request, findings.warning)
    return redirect(engine.get_absolute_url())


@permission_required("engines.change_engine", raise_exception=True)
@require_POST
def adapter_remove(request, name, adapter):
    engine = get_object_or_404(Engine, name=name)
    found = get_object_or_404(Adapter, engine=engine, name=adapter)
    services.adapter_remove(actor=Actor.from_request(request), adapter=found)
    messages.success(request, f"Adapter {adapter} removed from {engine.name}.")
    return redirect(engine.get_absolute_url())


def _config_fields(kind, values):
    """Form rows for one kind's config, described by its serializer so the page and API agree."""
    rows = []
    for name, field in CONFIG_SERIALIZERS[kind]().fields.items():
        widget = ("checkbox" if isinstance(field, drf.BooleanField)
                  else "select" if isinstance(field, drf.ChoiceField) else "number")
        rows.append({
            "name": name, "label": name.replace("_", " ").capitalize(), "widget": widget,
            "value": values.get(name, field.default), "choices": list(getattr(field, "choices", {}) or []),
            "min": getattr(field, "min_value", None), "max": getattr(field, "max_value", None),
        })
    return rows


def _form_data(post, kind):
    data = {name: post.get(name, "")
            for name in ("name", "description", "kind", "backend", "model", "base_url", "weight")}
    data["keep_alive_seconds"] = post.get("keep_alive_seconds", "").strip() or None  # empty: kept loaded
    if post.get("api_key"):
        data["api_key"] = post["api_key"]
    if kind in CONFIG_SERIALIZERS:
        config = {}
        for name, field in CONFIG_SERIALIZERS[kind]().fields.items():
            key = f"config.{name}"
            if isinstance(field, drf.BooleanField):
                config[name] = key in post
            elif post.get(key, "") != "":
                config[name] = post[key]
        data["config"] = config
    return data


def _found(serializer):
    """What the workers found, for the message (", checked: GPT2LMHeadModel, … on w1"); empty if unchecked."""
    findings = getattr(serializer, "findings", None)
    if findings is None or not findings.facts:
        return ""
    facts = findings.facts
    parts = [facts["architecture"] or facts["runtime"],
             f"{intword(facts['parameters'])} parameters" if facts["parameters"] else None,
             f"about {filesizeformat(facts['memory_bytes'])} in memory",
             "on " + ", ".join(worker["id"] for worker in findings.workers)]
    return ", checked: " + ", ".join(part for part in parts if part)


@permission_required("engines.add_engine", raise_exception=True)
def engine_form(request, name=None):
    engine = get_object_or_404(Engine, name=name) if name else None
    errors, values = {}, {"backend": Engine.Backend.LOCAL, "weight": 1}
    if request.method == "POST":
        kind = engine.kind if engine else request.POST.get("kind", "")
        values = _form_data(request.POST, kind)
        if engine:
            values.pop("kind")
        serializer = EngineSerializer(engine, data=values, partial=engine is not None)
        if serializer.is_valid():
            actor = Actor.from_request(request)
            if engine:
                engine = services.engine_update(actor=actor, engine=engine, **serializer.validated_data)
                messages.success(request, f"Engine {engine.name} saved{_found(serializer)}.")
            else:
                engine = services.engine_create(actor=actor, **serializer.validated_data)
                messages.success(request, f"Engine {engine.name} registered{_found(serializer)}.")
            findings = getattr(serializer, "findings", None)
            if findings is not None and findings.warning:
                messages.warning(request, findings.warning)
            return redirect("engines:detail", name=engine.name)
        errors = flatten(serializer.errors)
    elif engine:
        values = {**engine.audit_fields(), "api_key": ""}
    else:  # Register from the Models page: its model, kind and a name to start from
        values.update({name: request.GET[name] for name in ("model", "kind", "name") if request.GET.get(name)})
    current = values.get("config") or {}
    chosen_kind = engine.kind if engine else values.get("kind", Engine.Kind.LLM)
    return render(request, "engines/form.html", {
        "engine": engine, "values": values, "errors": errors,
        "kinds": Engine.Kind.choices, "backends": Engine.Backend.choices, "chosen_kind": chosen_kind,
        "config_sections": [
            {"kind": kind, "label": label, "fields": _config_fields(kind, current if kind == chosen_kind else {})}
            for kind, label in Engine.Kind.choices
        ],
    }, status=400 if errors else 200)


@permission_required("engines.manage_cache", raise_exception=True)
@require_POST
def engine_unload(request, name):
    engine = get_object_or_404(Engine, name=name)
    held = services.engine_unload_everywhere(actor=Actor.from_request(request), engine=engine)
    messages.success(request, f"{engine.name} is being unloaded from {', '.join(held)}; the next request loads it "
                              "again." if held else f"{engine.name} is not loaded on any worker.")
    return redirect(engine.get_absolute_url())


@permission_required("engines.change_engine", raise_exception=True)
@require_POST
def engine_toggle(request, name):
    engine = get_object_or_404(Engine, name=name)
    services.engine_set_enabled(actor=Actor.from_request(request), engine=engine, enabled=not engine.enabled)
    messages.success(request, f"Engine {engine.name} {'enabled' if engine.enabled else 'disabled'}.")
    return redirect("engines:list" if request.POST.get("back") == "list" else engine.get_absolute_url())


@permission_required("engines.delete_engine", raise_exception=True)
@require_POST
def engine_delete(request, name):
    engine = get_object_or_404(Engine, name=name)
    services.engine_delete(actor=Actor.from_request(request), engine=engine)
    messages.success(request, f"Engine {name} deleted.")
    return redirect("engines:list")
