"""Filters of the operator pages that Django's own (filesizeformat, naturaltime) do not cover."""

import datetime

from django import template

register = template.Library()


@register.filter
def unix_time(timestamp):
    """A Unix time (as workers report them) as an aware datetime, for `naturaltime`; None for none."""
    return datetime.datetime.fromtimestamp(float(timestamp), datetime.UTC) if timestamp else None


@register.filter
def ms(seconds):
    """Seconds as '8.5 ms' / '120 ms'; '—' for none (the route page's script formats the same way)."""
    if seconds in (None, ""):
        return "—"
    millis = float(seconds) * 1000
    return f"{millis:.1f} ms" if millis < 10 else f"{millis:.0f} ms"


@register.filter
def percent(fraction):
    """A fraction as '25%'; '—' for none."""
    return "—" if fraction in (None, "") else f"{float(fraction) * 100:.0f}%"


@register.filter
def duration(seconds):
    """Seconds as '45 s', '3 min 20 s' or '2 h 5 min'; '—' for none (static/js/downloads.js writes the same)."""
    if seconds in (None, ""):
        return "—"
    whole = round(float(seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    return f"{whole // 3600} h {whole % 3600 // 60} min"
