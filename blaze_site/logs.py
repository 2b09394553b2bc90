"""Structured logs: one JSON object a line, each carrying the request id of the work it belongs to.

The id lives in a context variable: the RequestId middleware sets it for a web request, Celery
carries it in a task header (blaze_site/celery.py) and sets it again around the task on the worker.
"""

import contextvars

from pythonjsonlogger.json import JsonFormatter

request_id = contextvars.ContextVar("request_id", default="")


class RequestIdFilter:
    """Stamps every record with the current request id ("" outside a request or task)."""

    def filter(self, record):
        record.request_id = request_id.get()
        return True


class BlazeJsonFormatter(JsonFormatter):
    """`{"time", "level", "logger", "message", "request_id", ...extra}`."""

    def __init__(self, *args, **kwargs):
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(process)d %(threadName)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "threadName": "thread",
                           "process": "pid"},
            timestamp=False,
        )
