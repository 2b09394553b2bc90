import time

from django import template

from engines.cache import human_bytes

register = template.Library()


@register.filter(name="bytes")
def bytes_filter(value):
    return human_bytes(value or 0)


@register.filter
def ago(timestamp):
    """A Unix time as '3 s ago' / '5 min ago' / '2 h ago'."""
    if not timestamp:
        return "never"
    seconds = max(0, time.time() - float(timestamp))
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


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
