from django.conf import settings
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
            "enabled": self.enabled, "weight": self.weight,
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
