"""The alerting pages' forms. They read what a person types (labels as `route="chat", worker="w1"`,
silence matchers as amtool writes them, durations as `2h`) into what the services take; the rules
are the models', and a broken one comes back from the service onto the field it names
(`show_error`)."""

import datetime
import json
import re

from django import forms
from django.core.exceptions import ValidationError
from django.utils import timezone

from alerts.models import COMPARE, AlertRule, matcher_text
from telemetry.series import SERIES

MATCHER = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|[^,]*?)\s*(?:,|$)')
DURATION = re.compile(r"(\d+)([smhdw])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_matchers(text):
    """`alertname="route-down", route=~"chat.*"` → Alertmanager's [{name, value, isRegex, isEqual}]."""
    matchers, position, text = [], 0, text.strip()
    while position < len(text):
        match = MATCHER.match(text, position)
        if match is None or match.end() == position:
            raise ValidationError(f'Could not read "{text[position:]}": write name="value" (or !=, =~, !~), '
                                  "separated by commas.")
        name, symbol, value = match.groups()
        matchers.append({"name": name, "value": json.loads(value) if value.startswith('"') else value,
                         "isRegex": "~" in symbol, "isEqual": not symbol.startswith("!")})
        position = match.end()
    return matchers


def parse_labels(text):
    """`route="chat", team=ml` → {"route": "chat", "team": "ml"}."""
    labels = {}
    for matcher in parse_matchers(text):
        if matcher["isRegex"] or not matcher["isEqual"]:
            raise ValidationError(f'Only name="value" here, not {matcher_text(matcher)}.')
        labels[matcher["name"]] = matcher["value"]
    return labels


def labels_text(labels):
    return ", ".join(f"{name}={json.dumps(value)}" for name, value in labels.items())


def parse_duration(text):
    """Prometheus's duration: `90s`, `30m`, `2h`, `1d`, `1h30m` → seconds."""
    text = text.strip()
    parts = DURATION.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        raise ValidationError("A duration such as 30m, 2h, 1d or 1h30m.")
    return sum(int(number) * SECONDS[unit] for number, unit in parts)


class ServiceForm(forms.Form):
    """A form whose values go to a service: `values()` its keyword arguments, `show_error(exc)` puts
    the service's InvalidInput on the field it names (FIELDS maps the service's names to the form's)."""

    FIELDS = {}
    ID = "%s"  # element ids, distinct for the forms that share a page

    def __init__(self, *args, **kwargs):
        super().__init__(*args, auto_id=self.ID, **kwargs)

    def values(self):
        return dict(self.cleaned_data)

    def show_error(self, exc):
        field = self.FIELDS.get(exc.field, exc.field)
        self.add_error(field if field in self.fields else None, exc.message)


class AlertRuleForm(ServiceForm):
    FIELDS = {"annotations": "summary"}
    ID = "rule_%s"

    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"placeholder": "e.g. chat-slow"}))
    series = forms.ChoiceField(choices=[(name, f"{name} ({series.unit})") for name, series in SERIES.items()])
    matchers = forms.CharField(required=False, widget=forms.TextInput(attrs={"placeholder": 'route="chat"'}),
                               help_text="Only these series (blank: all of them, one alert each).")
    comparator = forms.ChoiceField(choices=[(symbol, symbol) for symbol in COMPARE])
    threshold = forms.FloatField()
    for_seconds = forms.IntegerField(initial=0, label="For (seconds)",
                                     help_text="How long the condition must hold before the alert fires.")
    keep_firing_for_seconds = forms.IntegerField(initial=0, label="Keep firing for (seconds)",
                                                 help_text="How long it stays firing once the condition clears.")
    severity = forms.ChoiceField(choices=AlertRule.Severity.choices, initial=AlertRule.Severity.WARNING)
    labels = forms.CharField(required=False, widget=forms.TextInput(attrs={"placeholder": 'team="ml"'}),
                             help_text="Added to the alert's labels.")
    summary = forms.CharField(max_length=500, widget=forms.TextInput(
        attrs={"placeholder": "Route {{ $labels.route }} answers slowly: {{ $value }} s"}),
        help_text="May use {{ $labels.<name> }} and {{ $value }}.")
    description = forms.CharField(required=False, max_length=2000)
    enabled = forms.BooleanField(required=False, initial=True)

    @classmethod
    def of(cls, rule):
        """The form filled in with a rule's values (to change it)."""
        return cls(initial={
            "name": rule.name, "series": rule.series, "matchers": labels_text(rule.matchers),
            "comparator": rule.comparator, "threshold": rule.threshold, "for_seconds": rule.for_seconds,
            "keep_firing_for_seconds": rule.keep_firing_for_seconds, "severity": rule.severity,
            "labels": labels_text(rule.labels), "summary": rule.annotations.get("summary", ""),
            "description": rule.annotations.get("description", ""), "enabled": rule.enabled,
        })

    def clean_matchers(self):
        return parse_labels(self.cleaned_data["matchers"])

    def clean_labels(self):
        return parse_labels(self.cleaned_data["labels"])

    def values(self):
        values = dict(self.cleaned_data)
        annotations = {"summary": values.pop("summary")}
        if description := values.pop("description"):
            annotations["description"] = description
        return {**values, "annotations": annotations}


class AlertReceiverForm(ServiceForm):
    ID = "receiver_%s"

    name = forms.CharField(max_length=100, widget=forms.TextInput(attrs={"placeholder": "e.g. on-call"}))
    url = forms.CharField(label="Webhook URL", max_length=500,
                          widget=forms.TextInput(attrs={"placeholder": "https://hooks.example.com/alertmanager"}))
    group_by = forms.CharField(initial="alertname", required=False,
                               help_text="Label names, separated by commas; ... groups by every label.")
    repeat_interval_seconds = forms.IntegerField(initial=4 * 3600, label="Repeat every (seconds)")
    timeout_seconds = forms.FloatField(initial=5, label="Timeout (seconds)")
    send_resolved = forms.BooleanField(required=False, initial=True)

    def clean_group_by(self):
        return [name.strip() for name in self.cleaned_data["group_by"].split(",") if name.strip()]


class AlertSilenceForm(ServiceForm):
    FIELDS = {"ends_at": "duration"}
    ID = "silence_%s"

    matchers = forms.CharField(widget=forms.TextInput(attrs={"placeholder": 'alertname="route-down", route="chat"'}),
                               help_text='name="value", name!="value", name=~"regex" or name!~"regex".')
    duration = forms.CharField(initial="2h", label="Expires in", help_text="e.g. 30m, 2h, 1d.")
    comment = forms.CharField(max_length=1000, widget=forms.TextInput(attrs={"placeholder": "Why, and who to ask"}))

    def clean_matchers(self):
        return parse_matchers(self.cleaned_data["matchers"])

    def clean_duration(self):
        return parse_duration(self.cleaned_data["duration"])

    def values(self):
        now = timezone.now()
        return {"matchers": self.cleaned_data["matchers"], "comment": self.cleaned_data["comment"],
                "starts_at": now, "ends_at": now + datetime.timedelta(seconds=self.cleaned_data["duration"])}
