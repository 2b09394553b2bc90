from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.urls import reverse

MAX_DELAY_SECONDS = 60
ENDPOINT_RULE = "A path prefix starting with /, without spaces (e.g. /v1/); blank for every path."


class RateLimitPolicy(models.Model):
    """One limit: how many requests (`limit` per `period_seconds`) an identity of `scope` may make to
    the paths under `endpoint` (all when blank), counted by `algorithm`; over it, `action` refuses with
    429 or delays the request up to `max_delay` seconds. `clean()` holds the per-algorithm rules that
    the form and the API both apply."""

    class Scope(models.TextChoices):
        GLOBAL = "global", "Global (one counter for everyone)"
        USER = "user", "Per user"
        API_KEY = "api_key", "Per API key"
        IP = "ip", "Per client IP"
        ENDPOINT = "endpoint", "Per endpoint"

    class Algorithm(models.TextChoices):
        FIXED_WINDOW = "fixed_window", "Fixed window"
        SLIDING_WINDOW = "sliding_window", "Sliding window"
        TOKEN_BUCKET = "token_bucket", "Token bucket (bursts)"
        LEAKY_BUCKET = "leaky_bucket", "Leaky bucket (even spacing)"
        ADAPTIVE = "adaptive", "Adaptive (follows engine health)"

    class Action(models.TextChoices):
        REJECT = "reject", "Reject with 429"
        DELAY = "delay", "Delay, then reject"

    BURST_ALGORITHMS = (Algorithm.TOKEN_BUCKET, Algorithm.ADAPTIVE)

    name = models.CharField(max_length=100, unique=True)
    scope = models.CharField(max_length=16, choices=Scope.choices, default=Scope.IP)
    endpoint = models.CharField(
        max_length=200, blank=True,
        help_text="Path prefix the policy applies to, e.g. /v1/ or /v1/chat/completions. Blank: every path.",
    )
    algorithm = models.CharField(max_length=16, choices=Algorithm.choices, default=Algorithm.SLIDING_WINDOW)
    limit = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(1_000_000)], help_text="Requests allowed per period.",
    )
    period_seconds = models.PositiveIntegerField(
        default=60, validators=[MinValueValidator(1), MaxValueValidator(86_400)], help_text="Length of the period.",
    )
    burst = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(1_000_000)],
        help_text="Token bucket and adaptive only: requests allowed at once (the bucket's size). Blank: the limit.",
    )
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.REJECT)
    max_delay = models.FloatField(
        default=0, validators=[MinValueValidator(0), MaxValueValidator(MAX_DELAY_SECONDS)],
        help_text=f"Delay only: the longest a request waits for its turn, in seconds (up to {MAX_DELAY_SECONDS}).",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "rate limit policies"

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("ratelimits:edit", args=[self.pk])

    @property
    def capacity(self):
        """Requests allowed at once: the burst for bucket algorithms, else the limit."""
        return self.burst or self.limit

    def matches(self, path):
        return not self.endpoint or path.startswith(self.endpoint)

    def clean(self):
        errors = {}
        if self.endpoint and (not self.endpoint.startswith("/") or any(ch.isspace() for ch in self.endpoint)):
            errors["endpoint"] = ENDPOINT_RULE
        if self.burst is not None and self.algorithm not in self.BURST_ALGORITHMS:
            errors["burst"] = "Only token_bucket and adaptive policies have a burst; leave it empty."
        if self.action == self.Action.DELAY and not self.max_delay:
            errors["max_delay"] = "The delay action needs the longest wait, in seconds (more than 0)."
        if self.action == self.Action.REJECT and self.max_delay:
            errors["max_delay"] = "Only the delay action waits; set it to 0 or choose delay."
        if errors:
            raise ValidationError(errors)

    def audit_fields(self):
        return {
            "name": self.name, "scope": self.scope, "endpoint": self.endpoint, "algorithm": self.algorithm,
            "limit": self.limit, "period_seconds": self.period_seconds, "burst": self.burst,
            "action": self.action, "max_delay": self.max_delay, "enabled": self.enabled,
        }
