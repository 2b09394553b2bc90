import csv
import json

from django.http import StreamingHttpResponse

COLUMNS = [
    "time", "actor", "action", "target_type", "target_id", "target", "changes", "data",
    "ip", "user_agent", "request_id",
]


class _Echo:
    def write(self, value):
        return value


def _cell(value):
    text = "" if value is None else str(value)
    # A leading = + - @ makes spreadsheets evaluate the cell; a quote keeps it text.
    return f"'{text}" if text[:1] in ("=", "+", "-", "@") else text


def audit_csv_response(events, filename="blaze-audit.csv"):
    """Stream events as CSV so an export of any size never sits in memory."""
    writer = csv.writer(_Echo())

    def rows():
        yield writer.writerow(COLUMNS)
        for event in events.iterator(chunk_size=500):
            yield writer.writerow(
                _cell(json.dumps(getattr(event, column), sort_keys=True) if column in ("changes", "data")
                      else event.time.isoformat() if column == "time" else getattr(event, column))
                for column in COLUMNS
            )

    response = StreamingHttpResponse(rows(), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
