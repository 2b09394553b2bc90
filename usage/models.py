"""Who used what, and what it cost: one UsageRecord per served request, kept RAW_DAYS (settings), and
hourly and daily UsageRollups that pages and the API read (kept for good).

A record's dimensions are plain values, not foreign keys: a key, user or engine deleted later leaves
its history as it was. In rollups "none" is 0 or "" rather than NULL, so that the unique constraint
an upsert relies on matches (NULL never equals NULL in a unique index)."""

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

from accounts.models import ApiKey, Team, User

MONEY = {"max_digits": 18, "decimal_places": 8, "default": Decimal(0)}


class Price(models.Model):
    """What an engine's use costs, in `currency`: per million prompt, cached prompt and completion
    tokens, per image, per million embedding tokens, and per worker-hour (a local engine's time).
    A record's cost is computed as it is stored and kept with it: a later change here rewrites no
    history."""

    engine = models.CharField(max_length=100, unique=True)
    currency = models.CharField(max_length=3, default="USD")
    per_1m_prompt = models.DecimalField(**MONEY, validators=[MinValueValidator(0)])
    per_1m_cached = models.DecimalField(**MONEY, validators=[MinValueValidator(0)])
    per_1m_completion = models.DecimalField(**MONEY, validators=[MinValueValidator(0)])
    per_image = models.DecimalField(**MONEY, validators=[MinValueValidator(0)])
    per_1m_embedding = models.DecimalField(**MONEY, validators=[MinValueValidator(0)])
    per_worker_hour = models.DecimalField(**MONEY, validators=[MinValueValidator(0)])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["engine"]

    def __str__(self):
        return f"price of {self.engine}"

    def audit_fields(self):
        return {field: str(getattr(self, field)) for field in (
            "engine", "currency", "per_1m_prompt", "per_1m_cached", "per_1m_completion", "per_image",
            "per_1m_embedding", "per_worker_hour")}

    def cost(self, *, prompt_tokens=0, cached_tokens=0, completion_tokens=0, images=0, embedding_tokens=0,
             worker_seconds=0.0):
        """The cost of one request's counts. Cached prompt tokens are priced apart from the rest of the
        prompt (`prompt_tokens` includes them, as OpenAI's usage does)."""
        million = Decimal(1_000_000)
        return (
            Decimal(max(prompt_tokens - cached_tokens, 0)) * self.per_1m_prompt / million
            + Decimal(cached_tokens) * self.per_1m_cached / million
            + Decimal(completion_tokens) * self.per_1m_completion / million
            + Decimal(images) * self.per_image
            + Decimal(embedding_tokens) * self.per_1m_embedding / million
            + Decimal(str(worker_seconds)) * self.per_worker_hour / Decimal(3600)
        ).quantize(Decimal("0.00000001"))


class UsageRecord(models.Model):
    """One served request: who (user, API key, team), what (route, engine, adapter, worker, kind, where it came
    from) and how much. `event` is the usage event's id: storing one twice is impossible, so an event
    delivered again after a crash is stored once."""

    event = models.CharField(max_length=64, unique=True)
    at = models.DateTimeField(db_index=True)
    user_id = models.BigIntegerField(null=True, db_index=True)
    api_key_id = models.BigIntegerField(null=True, db_index=True)
    team_id = models.BigIntegerField(null=True, db_index=True)
    source = models.CharField(max_length=16)  # v1 or playground
    kind = models.CharField(max_length=16)  # chat, completion, embedding, image, image_edit
    route = models.CharField(max_length=100, blank=True)
    engine = models.CharField(max_length=100)
    adapter = models.CharField(max_length=100, blank=True)  # the LoRA adapter the engine ran it under
    worker = models.CharField(max_length=200, blank=True)
    outcome = models.CharField(max_length=16, default="answered")  # answered, cancelled, failed
    prompt_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    embedding_inputs = models.PositiveIntegerField(default=0)
    images = models.PositiveIntegerField(default=0)
    steps = models.PositiveIntegerField(default=0)
    worker_seconds = models.FloatField(default=0.0)
    cost = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3, blank=True)

    class Meta:
        ordering = ["-at"]
        permissions = [("view_all_usage", "Can see every user's usage")]


class UsageRollup(models.Model):
    """The sums of the records of one hour or day (UTC start) for one value of one dimension (the engine
    `chat`, the user `7`, …): for everyone (`user_id` 0) and for the records' user alone, so that every
    grouping an admin or a user asks for reads a few hundred rows, however many records there are
    (bench/usage.py). `value` is the engine, route or kind name, or the user's, key's or team's id ("":
    none)."""

    HOUR, DAY = "hour", "day"
    DIMENSIONS = ("engine", "route", "kind", "user", "api_key", "team")
    SUMS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens", "embedding_inputs", "images", "steps",
            "worker_seconds", "cost")  # what a rollup adds up (`cost` last: the upsert adapts it apart)
    period = models.CharField(max_length=4, choices=[(HOUR, "hour"), (DAY, "day")])
    start = models.DateTimeField()
    dimension = models.CharField(max_length=8)
    value = models.CharField(max_length=100, blank=True)
    user_id = models.BigIntegerField(default=0)
    currency = models.CharField(max_length=3, default="")
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    embedding_inputs = models.BigIntegerField(default=0)
    images = models.BigIntegerField(default=0)
    steps = models.BigIntegerField(default=0)
    worker_seconds = models.FloatField(default=0.0)
    cost = models.DecimalField(**MONEY)

    class Meta:
        constraints = [models.UniqueConstraint(
            fields=["period", "dimension", "user_id", "start", "value", "currency"],
            name="usage_rollup_one_row_per_group")]


class Budget(models.Model):
    """A limit on what a key, a user or a team may use per day, week or month (calendar periods in
    BLAZE_USAGE_TIME_ZONE) or in total: tokens, requests or cost. The hard `limit` refuses: admission
    reserves each request's worst case atomically in Redis and settles it to what was used when its
    record is stored (usage/budgets.py). The optional `soft_limit` refuses nothing: once spent reaches
    it, the live feed's `budget_soft_limit_reached` series is 1 and the alert rule `budget-soft-limit`
    fires to the receivers (docs/usage.md)."""

    class Scope(models.TextChoices):
        KEY = "key", "API key"
        USER = "user", "User"
        TEAM = "team", "Team"

    class Metric(models.TextChoices):
        TOKENS = "tokens", "Tokens (prompt + completion)"
        REQUESTS = "requests", "Requests"
        COST = "cost", "Cost (the engines' prices)"

    class Period(models.TextChoices):
        DAY = "day", "Per day"
        WEEK = "week", "Per week (from Monday)"
        MONTH = "month", "Per month"
        TOTAL = "total", "In total"

    name = models.SlugField(max_length=100, unique=True)
    scope = models.CharField(max_length=8, choices=Scope.choices)
    target_id = models.BigIntegerField(help_text="The key's, user's or team's id.")
    metric = models.CharField(max_length=8, choices=Metric.choices)
    period = models.CharField(max_length=8, choices=Period.choices)
    limit = models.DecimalField(max_digits=18, decimal_places=8, validators=[MinValueValidator(0)])
    soft_limit = models.DecimalField(
        max_digits=18, decimal_places=8, null=True, blank=True, validators=[MinValueValidator(0)],
        help_text="Alert (not refuse) once this much is spent in the period; below the limit.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return f"budget {self.name}"

    def clean(self):
        if self.soft_limit is not None and self.limit is not None and self.soft_limit >= self.limit:
            raise ValidationError({"soft_limit": "The soft limit must be below the limit (it warns before refusing)."})
        if self.target_id is not None and self.scope in TARGETS and not TARGETS[self.scope].objects.filter(
                pk=self.target_id).exists():
            raise ValidationError({"target_id": f"No {self.get_scope_display().lower()} has id {self.target_id}."})

    def target_name(self):
        """The key's, user's or team's name as pages show it ("#id" once it is gone)."""
        target = TARGETS[self.scope].objects.filter(pk=self.target_id).first()
        if target is None:
            return f"#{self.target_id}"
        return getattr(target, "username", None) or target.name

    def amount(self, value):
        """`value` as this budget's metric reads: 1,500 tokens, 12 requests, 3.25 cost."""
        value = Decimal(value)
        if self.metric == self.Metric.COST:
            return f"{value.quantize(Decimal('0.01')):,}"
        return f"{value.to_integral_value():,}"

    def audit_fields(self):
        return {field: str(getattr(self, field)) for field in (
            "name", "scope", "target_id", "metric", "period", "limit", "soft_limit", "enabled")}


TARGETS = {Budget.Scope.KEY: ApiKey, Budget.Scope.USER: User, Budget.Scope.TEAM: Team}
