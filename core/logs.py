"""Structured logs: one JSON object a line, each carrying the request id of the work it belongs to and,
when tracing is on, its trace id.

The id lives in a context variable: the RequestId middleware sets it for a web request, Celery
carries it in a task header (engines/celery_app.py) and sets it again around the task on the worker.
"""

import contextvars
import logging
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from core import tracing

request_id = contextvars.ContextVar("request_id", default="")


class RequestIdFilter:
    """Stamps every record with the current request id and trace id ("" outside a request or task, and
    for a trace not recorded). Written here rather than with opentelemetry-instrumentation-logging: that
    one replaces the log record factory to add its own `otelTraceID` fields, where one filter suffices."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.trace_id = tracing.trace_id()
        return True


class BlazeJsonFormatter(JsonFormatter):
    """`{"time", "level", "logger", "message", "request_id", "trace_id", ...extra}`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(trace_id)s %(process)d %(threadName)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger", "threadName": "thread",
                           "process": "pid"},
            timestamp=False,
        )
