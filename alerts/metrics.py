"""The alerting gauge, beside telemetry/metrics.py: `blaze_alerts{alertname, severity, state}`, the
number of alerts in each state (pending, firing, suppressed) after the last evaluation.

Set by the feed's producer only, `mostrecent` across processes: every evaluation writes each rule's
three states (0 where it has none) and zeroes what it counted before and no longer does, so a
producer that took over from another overwrites what that one left.
"""

from collections import Counter

from prometheus_client import Gauge

STATES = ("pending", "firing", "suppressed")

ALERTS = Gauge(
    "blaze_alerts", "Alerts after the last evaluation, by rule (alertname), severity and state.",
    ["alertname", "severity", "state"],
)

_counted = set()  # the label sets this process has set above 0


def count(alerts, rules):
    """Set the gauge from `alerting.evaluate`'s alerts and the rules it evaluated."""
    counts = Counter((alert["rule"], alert["labels"].get("severity", ""), alert["state"]) for alert in alerts)
    zeroes = {(rule.name, rule.severity, state) for rule in rules for state in STATES} | _counted
    for labels in zeroes - set(counts):
        ALERTS.labels(*labels).set(0)
    for labels, number in counts.items():
        ALERTS.labels(*labels).set(number)
    _counted.clear()
    _counted.update(counts)
