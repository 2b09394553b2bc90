"""Alerting's configuration, as Prometheus and Alertmanager name it: rules (a series compared with a
threshold for a while), receivers (webhooks that get Alertmanager's JSON) and silences (matchers that
mute alerts for a time). Each model's `clean()` holds its rules; the services apply them
(`full_clean`), so the API, the pages and the shell get the same answers."""

import operator
import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models
from django.utils import timezone

from telemetry.series import SERIES, series_key

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
RESERVED_LABELS = ("alertname", "severity")  # set from the rule's name and severity
TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
# What an annotation may substitute, as in a Prometheus rule: {{ $labels.<name> }} and {{ $value }}.
TEMPLATE_LABEL = re.compile(r"\s*(?:\$labels|\.Labels)\.([a-zA-Z_][a-zA-Z0-9_]*)\s*")
TEMPLATE_VALUE = re.compile(r"\s*(?:\$value|\.Value)\s*")
COMPARE = {">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
           "!=": operator.ne}


def format_value(value):
    """A sample's value as Prometheus templates print it: 6 not 6.0, 0.07 not 0.07000000000000001."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def expand(text, labels, value):
    """An annotation with its {{ $labels.x }} and {{ $value }} filled in (a missing label is empty)."""

    def fill(match):
        label = TEMPLATE_LABEL.fullmatch(match.group(1))
        if label:
            return labels.get(label.group(1), "")
        return format_value(value) if TEMPLATE_VALUE.fullmatch(match.group(1)) else match.group(0)

    return TEMPLATE.sub(fill, text)


def _label_map(value, what, *, allowed=None, reserved=()):
    """The problem with a {label name: text} dict, or None."""
    if not isinstance(value, dict):
        return f"Expected an object of {what}, e.g. {{\"route\": \"chat\"}}."
    for name, text in value.items():
        if not LABEL_NAME.fullmatch(name):
            return f"{name!r} is not a label name (letters, digits and _, not starting with a digit)."
        if name in reserved:
            return f"{name!r} is set by the rule itself; choose another name."
        if allowed is not None and name not in allowed:
            return f"{name!r} is not a label of this series; it has: {', '.join(allowed) or 'none'}."
        if not isinstance(text, str):
            return f"The value of {name!r} must be text."
    return None


class AlertRule(models.Model):
    """Alert while `series <comparator> threshold` holds for `for_seconds`; one alert per label set of
    the series that `matchers` select (all of them when empty). Firing alerts stay firing for
    `keep_firing_for_seconds` after the condition clears. `labels` are added to each alert's;
    `annotations` (`summary`, optional `description`) may use {{ $labels.<name> }} and {{ $value }}."""

    class Severity(models.TextChoices):
        CRITICAL = "critical"
        WARNING = "warning"
        INFO = "info"

    name = models.SlugField(max_length=100, unique=True, help_text="The alert's name (its alertname label).")
    series = models.CharField(max_length=100, help_text="A series of the live feed, e.g. route_error_ratio.")
    matchers = models.JSONField(default=dict, blank=True,
                                help_text="Only the series with these labels, e.g. {\"route\": \"chat\"}.")
    comparator = models.CharField(max_length=2, choices=[(symbol, symbol) for symbol in COMPARE])
    threshold = models.FloatField()
    for_seconds = models.PositiveIntegerField(default=0, help_text="How long the condition must hold to fire.")
    keep_firing_for_seconds = models.PositiveIntegerField(
        default=0, help_text="How long a firing alert stays firing once its condition clears.",
    )
    severity = models.CharField(max_length=8, choices=Severity.choices, default=Severity.WARNING)
    labels = models.JSONField(default=dict, blank=True)
    annotations = models.JSONField(default=dict)
    enabled = models.BooleanField(default=True)
    builtin = models.BooleanField(default=False, help_text="Made by the built-in alert pack.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def expression(self):
        """The condition as PromQL writes it: route_error_ratio{route="chat"} > 0.05."""
        return f"{series_key(self.series, self.matchers)} {self.comparator} {format_value(self.threshold)}"

    def holds(self, value):
        return COMPARE[self.comparator](value, self.threshold)

    def selects(self, sample):
        """Whether a sample is one of this rule's series."""
        return sample.name == self.series and all(sample.labels.get(k) == v for k, v in self.matchers.items())

    def clean(self):
        errors = {}
        if self.series not in SERIES:
            errors["series"] = f"Unknown series {self.series!r}; known: {', '.join(sorted(SERIES))}."
        elif problem := _label_map(self.matchers, "label matchers", allowed=SERIES[self.series].labels):
            errors["matchers"] = problem
        if problem := _label_map(self.labels, "labels", reserved=RESERVED_LABELS):
            errors["labels"] = problem
        if problem := self._annotations_problem():
            errors["annotations"] = problem
        if errors:
            raise ValidationError(errors)

    def _annotations_problem(self):
        annotations = self.annotations
        if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
            return "Expected an object of texts, e.g. {\"summary\": \"Route {{ $labels.route }} is slow\"}."
        if not annotations.get("summary", "").strip():
            return "A summary is required: one line saying what is wrong."
        for text in annotations.values():
            for match in TEMPLATE.finditer(text):
                if not (TEMPLATE_LABEL.fullmatch(match.group(1)) or TEMPLATE_VALUE.fullmatch(match.group(1))):
                    return f"{match.group(0)} is not understood; use {{{{ $labels.<name> }}}} or {{{{ $value }}}}."
        return None

    def audit_fields(self):
        return {
            "name": self.name, "series": self.series, "matchers": self.matchers, "comparator": self.comparator,
            "threshold": self.threshold, "for_seconds": self.for_seconds,
            "keep_firing_for_seconds": self.keep_firing_for_seconds, "severity": self.severity,
            "labels": self.labels, "annotations": self.annotations, "enabled": self.enabled, "builtin": self.builtin,
        }


def default_group_by():
    return ["alertname"]


class AlertReceiver(models.Model):
    """A webhook that gets Alertmanager's JSON (version 4): alerts grouped by `group_by` labels
    ("..." groups by every label), sent when a group's firing set changes, and again every
    `repeat_interval_seconds` while it fires. `send_resolved`: also say when alerts resolve."""

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=500, validators=[URLValidator(schemes=["http", "https"])],
                          help_text="Where to POST the notifications (http or https).")
    enabled = models.BooleanField(default=True)
    send_resolved = models.BooleanField(default=True)
    group_by = models.JSONField(default=default_group_by, blank=True,
                                help_text="Label names whose alerts go together, e.g. [\"alertname\", \"route\"].")
    repeat_interval_seconds = models.PositiveIntegerField(
        default=4 * 3600, validators=[MinValueValidator(1)],
        help_text="Send a group that keeps firing again after this long.",
    )
    timeout_seconds = models.FloatField(default=5, validators=[MinValueValidator(0.1), MaxValueValidator(60)],
                                        help_text="How long one delivery attempt may take.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def origin(self):
        """The URL without its path and query, for those who may not see a webhook's secret: `/...` in
        their place (a URI still, as the API's schema says the URL is)."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}/..."

    def clean(self):
        group_by = self.group_by
        if not isinstance(group_by, list) or not all(
            isinstance(name, str) and (name == "..." or LABEL_NAME.fullmatch(name)) for name in group_by
        ):
            raise ValidationError({"group_by": "Expected a list of label names, e.g. [\"alertname\"]; "
                                               "[\"...\"] groups by every label."})

    def audit_fields(self):
        return {
            "name": self.name, "url": self.url, "enabled": self.enabled, "send_resolved": self.send_resolved,
            "group_by": self.group_by, "repeat_interval_seconds": self.repeat_interval_seconds,
            "timeout_seconds": self.timeout_seconds,
        }


class AlertSilence(models.Model):
    """Mutes the alerts whose labels match every matcher, from `starts_at` to `ends_at`. Matchers are
    Alertmanager's: {name, value, isRegex, isEqual}; a regex must match the whole value, and
    `isEqual: false` negates (`!=`, `!~`)."""

    matchers = models.JSONField()
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    created_by = models.CharField(max_length=200, blank=True)
    comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-ends_at"]

    def __str__(self):
        return f"silence {self.pk}: " + ", ".join(matcher_text(m) for m in self.matchers if isinstance(m, dict))

    def state(self, now=None):
        """Alertmanager's: pending (not started), active or expired."""
        now = now or timezone.now()
        return "pending" if now < self.starts_at else "active" if now < self.ends_at else "expired"

    def matches(self, labels):
        return all(_matcher_holds(matcher, labels.get(matcher["name"], "")) for matcher in self.matchers)

    def clean(self):
        errors = {}
        if problem := self._matchers_problem():
            errors["matchers"] = problem
        if self.starts_at and self.ends_at:
            if self.ends_at <= self.starts_at:
                errors["ends_at"] = "Must be after starts_at."
            elif self._state.adding and self.ends_at <= timezone.now():
                errors["ends_at"] = "Must be in the future: a silence that has ended mutes nothing."
        if errors:
            raise ValidationError(errors)

    def _matchers_problem(self):
        matchers = self.matchers
        if not isinstance(matchers, list) or not matchers:
            return "Expected a list of matchers, e.g. [{\"name\": \"alertname\", \"value\": \"route-down\"}]."
        for matcher in matchers:
            if not isinstance(matcher, dict) or set(matcher) - {"name", "value", "isRegex", "isEqual"}:
                return "Each matcher is {name, value, isRegex, isEqual}."
            if not isinstance(matcher.get("name"), str) or not LABEL_NAME.fullmatch(matcher["name"]):
                return f"{matcher.get('name')!r} is not a label name."
            if not isinstance(matcher.get("value"), str):
                return f"The value of the {matcher['name']!r} matcher must be text."
            if not all(isinstance(matcher.get(flag, False), bool) for flag in ("isRegex", "isEqual")):
                return "isRegex and isEqual are true or false."
            if matcher.get("isRegex"):
                try:
                    re.compile(matcher["value"])
                except re.error as exc:
                    return f"The {matcher['name']!r} matcher is not a valid regex: {exc}."
        if all(_matcher_holds(matcher, "") for matcher in matchers):
            return "These matchers would match every alert; name at least one label value to match."
        return None

    def audit_fields(self):
        return {
            "matchers": ", ".join(matcher_text(m) for m in self.matchers if isinstance(m, dict)),
            "starts_at": self.starts_at.isoformat() if self.starts_at else None,
            "ends_at": self.ends_at.isoformat() if self.ends_at else None, "comment": self.comment,
        }


def _matcher_holds(matcher, value):
    matched = (re.fullmatch(matcher["value"], value) is not None) if matcher.get("isRegex") else (
        value == matcher["value"])
    return matched == matcher.get("isEqual", True)


def matcher_text(matcher):
    """A matcher as amtool writes it: name="value", name!="value", name=~"regex", name!~"regex"."""
    symbol = ("=" if matcher.get("isEqual", True) else "!") + ("~" if matcher.get("isRegex") else "")
    symbol = {"=": "=", "!": "!="}.get(symbol, symbol)
    return f'{matcher.get("name")}{symbol}"{matcher.get("value")}"'
