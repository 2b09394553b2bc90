from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse


class Engine(models.Model):
    """A registered inference engine: what model, which kind, where it runs, and how it is tuned."""

    class Kind(models.TextChoices):
        LLM = "llm", "LLM"
        DIFFUSION = "diffusion", "Diffusion"
        EMBEDDING = "embedding", "Embedding"

    class Backend(models.TextChoices):
        LOCAL = "local", "Local (this cluster's workers)"
        REMOTE = "remote", "Remote (OpenAI-compatible URL)"

    class Status(models.TextChoices):
        OFFLINE = "offline", "Offline"
        INITIALIZING = "initializing", "Initializing"
        READY = "ready", "Ready"
        DEGRADED = "degraded", "Degraded"
        FAILED = "failed", "Failed"
        RECOVERING = "recovering", "Recovering"

    name = models.SlugField(max_length=64, unique=True)
    description = models.CharField(max_length=300, blank=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    backend = models.CharField(max_length=16, choices=Backend.choices, default=Backend.LOCAL)
    model = models.CharField(
        max_length=500, blank=True,
        help_text="Local: a model directory or hub id. Remote: the upstream model name (default: the engine name).",
    )
    base_url = models.URLField(max_length=500, blank=True, help_text="Remote only: the OpenAI-compatible base URL.")
    api_key = models.CharField(max_length=500, blank=True, help_text="Remote only: sent upstream, never shown.")
    config = models.JSONField(default=dict, blank=True)
    keep_alive_seconds = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(30 * 86400)],
        help_text="Local only: unload the model from each worker after this long without a request; "
                  "empty: keep it loaded until evicted or unloaded.")
    enabled = models.BooleanField(default=True)
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(0), MaxValueValidator(1000)])
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OFFLINE)
    status_detail = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("manage_cache", "Can load, unload and evict models on workers")]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("engines:detail", args=[self.name])

    def audit_fields(self):
        """The fields an audit diff compares (api_key included: audit masks it)."""
        return {
            "name": self.name, "description": self.description, "kind": self.kind, "backend": self.backend,
            "model": self.model, "base_url": self.base_url, "api_key": self.api_key, "config": dict(self.config),
            "keep_alive_seconds": self.keep_alive_seconds, "enabled": self.enabled, "weight": self.weight,
        }


class GeneratedImage(models.Model):
    """An image a diffusion engine made, kept so the playground (and `response_format=url`) can show it."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    engine = models.CharField(max_length=64)
    prompt = models.TextField()
    params = models.JSONField(default=dict)
    seed = models.BigIntegerField()
    file = models.FileField(upload_to="images/%Y/%m/%d/")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.engine}: {self.prompt[:40]}"


class Route(models.Model):
    """A model name clients ask for, spread over engine replicas (targets) by a strategy.

    A route may share its name with an engine: the route wins, so an operator can put replicas
    behind a name clients already use without changing them.
    """

    class Strategy(models.TextChoices):
        ROUND_ROBIN = "round_robin", "Round robin"
        LEAST_CONNECTIONS = "least_connections", "Least connections"
        WEIGHTED_ROUND_ROBIN = "weighted_round_robin", "Weighted round robin"
        LEAST_RESPONSE_TIME = "least_response_time", "Least response time"
        IP_HASH = "ip_hash", "IP hash (sticky per client)"
        ADAPTIVE = "adaptive", "Adaptive (latency and errors)"
        RANDOM = "random", "Random"
        WEIGHTED_RANDOM = "weighted_random", "Weighted random"

    name = models.SlugField(max_length=64, unique=True, help_text="The `model` a client asks for.")
    strategy = models.CharField(max_length=24, choices=Strategy.choices, default=Strategy.ROUND_ROBIN)
    sticky_ttl_seconds = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(1), MaxValueValidator(86_400)],
        help_text="IP hash only: how long a client stays with the target it was given.",
    )
    enabled = models.BooleanField(default=True)
    description = models.CharField(max_length=300, blank=True)
    keep_prompts = models.BooleanField(
        default=False, help_text="Keep prompts and answers in the Requests page's log (never keys or secrets).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("engines:route", args=[self.name])

    def audit_fields(self):
        """The fields an audit diff compares; `fallbacks` as their names in order, "a, b" (a text, so a
        route without any records nothing, and the page's history reads it as it is written)."""
        return {
            "name": self.name, "strategy": self.strategy, "sticky_ttl_seconds": self.sticky_ttl_seconds,
            "enabled": self.enabled, "description": self.description, "keep_prompts": self.keep_prompts,
            "fallbacks": ", ".join(self.fallback_names()),
        }

    def fallback_names(self):
        """The names of the route's fallbacks, in order (prefetched with the route, else read)."""
        if "fallbacks" in getattr(self, "_prefetched_objects_cache", {}):
            return [fallback.name for fallback in self.fallbacks.all()]
        if self.pk is None:
            return []
        return [fallback.name for fallback in self.fallbacks.select_related("route_fallback", "engine_fallback")]

    def target_kind(self):
        """The kind of the route's targets (all are one kind), or None while it has none."""
        target = self.targets.select_related("engine").first()
        return target.engine.kind if target else None


class RouteTarget(models.Model):
    """One engine a route may send to: a local engine (on any live worker, or pinned to one) or a
    remote engine. `clean()` holds the rules every caller gets: one kind per route, a worker pin only
    for a local engine, no duplicate."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="targets")
    engine = models.ForeignKey(Engine, on_delete=models.CASCADE, related_name="route_targets")
    worker = models.CharField(
        max_length=200, blank=True, help_text="Local engines only: the worker id to pin to. Blank: any live worker.",
    )
    weight = models.PositiveIntegerField(default=1, validators=[MinValueValidator(1), MaxValueValidator(1000)])
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [models.UniqueConstraint(fields=["route", "engine", "worker"], name="unique_route_target")]

    def __str__(self):
        return f"{self.engine.name}@{self.worker}" if self.worker else self.engine.name

    def clean(self):
        if self.engine_id is None or self.route_id is None:
            return
        if self.worker and (self.worker != self.worker.strip() or any(ch.isspace() for ch in self.worker)):
            raise ValidationError({"worker": "A worker id has no spaces (as on the Workers page)."})
        if self.worker and self.engine.backend != Engine.Backend.LOCAL:
            raise ValidationError({
                "worker": "Only a local engine runs on a worker; leave it blank for a remote engine."})
        siblings = RouteTarget.objects.filter(route_id=self.route_id).exclude(pk=self.pk).select_related("engine")
        if any(other.engine_id == self.engine_id and other.worker == self.worker for other in siblings):
            where = f"worker {self.worker}" if self.worker else "any worker"
            raise ValidationError({"engine": ValidationError(  # code: the API answers a taken target 409
                f"The route already sends to {self.engine.name} on {where}.", code="unique")})
        kinds = {other.engine.kind for other in siblings}
        if kinds and self.engine.kind not in kinds:
            raise ValidationError({"engine": (
                f"This route's targets are {', '.join(sorted(kinds))} engines; "
                f"{self.engine.name} is {self.engine.kind}."
            )})

    def audit_fields(self):
        return {"engine": self.engine.name, "worker": self.worker, "weight": self.weight, "enabled": self.enabled}


class RouteFallback(models.Model):
    """Where a route's request goes when all its own targets have failed or are skipped: another route
    (with its own targets, strategy and fallbacks) or an engine, tried in `position` order. A row per
    fallback with foreign keys rather than a JSON list of names: a renamed fallback stays named, a
    deleted one leaves the list with it (cascade), and the database keeps each named once.

    `clean()` holds the rules every caller gets: one of a route or an engine, not the route itself, of
    the route's kind, and no loop back to the route (A → B → A)."""

    route = models.ForeignKey(Route, on_delete=models.CASCADE, related_name="fallbacks")
    position = models.PositiveSmallIntegerField()
    route_fallback = models.ForeignKey(Route, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    engine_fallback = models.ForeignKey(Engine, null=True, blank=True, on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["route", "position"], name="unique_route_fallback_position"),
            models.UniqueConstraint(fields=["route", "route_fallback"], name="unique_route_fallback_route"),
            models.UniqueConstraint(fields=["route", "engine_fallback"], name="unique_route_fallback_engine"),
            models.CheckConstraint(
                condition=models.Q(route_fallback__isnull=False, engine_fallback__isnull=True)
                | models.Q(route_fallback__isnull=True, engine_fallback__isnull=False),
                name="route_fallback_one_of_route_or_engine",
            ),
        ]

    def __str__(self):
        return self.name

    @property
    def name(self):
        return self.route_fallback.name if self.route_fallback_id else self.engine_fallback.name

    def clean(self):
        if (self.route_fallback_id is None) == (self.engine_fallback_id is None):
            raise ValidationError({"fallbacks": "A fallback is a route or an engine."})
        if self.route_fallback_id is not None and self.route_fallback_id == self.route_id:
            raise ValidationError({"fallbacks": f"The route {self.route.name} cannot fall back to itself."})
        kind = self.route.target_kind()
        theirs = self.engine_fallback.kind if self.engine_fallback_id else self.route_fallback.target_kind()
        if kind and theirs and kind != theirs:
            raise ValidationError({"fallbacks": (
                f"This route's targets are {kind} engines; {self.name} is {theirs}.")})
        if self.route_fallback_id is not None:
            loop = self._path_back()
            if loop:
                raise ValidationError({"fallbacks": (
                    f"{self.name} falls back to {self.route.name} ({' → '.join(loop)}): a loop.")})

    def _path_back(self):
        """The names from the route through this fallback and back to the route, if its fallback
        routes lead back to it; else []."""
        paths, seen = [[self.route.name, self.route_fallback.name]], set()
        while paths:
            path = paths.pop(0)
            if path[-1] in seen:
                continue
            seen.add(path[-1])
            for name in RouteFallback.objects.filter(route__name=path[-1], route_fallback__isnull=False).values_list(
                    "route_fallback__name", flat=True):
                if name == self.route.name:
                    return [*path, name]
                paths.append([*path, name])
        return []


class Adapter(models.Model):
    """A LoRA adapter served on a local LLM engine (its base): a PEFT adapter directory for the
    transformers runtime, a GGUF LoRA file for llama.cpp. Clients ask for it as `base:adapter` or by
    its own name, which no engine shares; its rows run in the base's batch, each under its own adapter.
    `clean()` holds the rules every caller gets: a local LLM base, a name no engine has."""

    name = models.SlugField(max_length=64, unique=True, help_text="The `model` a client asks for (or `base:name`).")
    engine = models.ForeignKey(Engine, on_delete=models.CASCADE, related_name="adapters")
    path = models.CharField(
        max_length=500, help_text="On the workers: a PEFT adapter directory (transformers) or a GGUF LoRA file "
                                  "(llama.cpp).")
    description = models.CharField(max_length=300, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"{self.engine.name}:{self.name}"

    def clean(self):
        if self.engine_id is None:
            return
        if self.engine.kind != Engine.Kind.LLM or self.engine.backend != Engine.Backend.LOCAL:
            raise ValidationError({"engine": (
                f"{self.engine.name} is not a local LLM engine: only those take adapters.")})
        if self.name and Engine.objects.filter(name=self.name).exists():
            raise ValidationError({"name": ValidationError(  # code: the API answers a taken name 409
                f"An engine is named {self.name}: an adapter's name is a model name too.", code="unique")})

    def audit_fields(self):
        return {"name": self.name, "path": self.path, "description": self.description, "enabled": self.enabled}
