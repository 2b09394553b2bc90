import os

from celery import Celery
from celery.signals import before_task_publish, setup_logging, task_postrun, task_prerun, worker_init
from kombu import Queue
from kombu.common import Broadcast

from engines import contract

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blaze_site.settings")

# Only a worker imports its tasks (`include`); the web side sends them by name (engines/contract.py).
# The app is named for the project; `celery -A blaze_site` finds it as `blaze_site.celery_app`.
app = Celery("blaze_site", include=["engines.worker.tasks"])
app.config_from_object("django.conf:settings", namespace="CELERY")
# The shared queue, plus a broadcast queue every worker hears (unload an engine everywhere).
# Each worker adds a queue of its own at start-up (engines/worker/tasks.py).
CONTROL = Broadcast(contract.CONTROL_QUEUE)
app.conf.task_default_queue = contract.SHARED_QUEUE
app.conf.task_queues = (Queue(contract.SHARED_QUEUE), CONTROL)

REQUEST_ID_HEADER = "blaze_request_id"


@setup_logging.connect
def _django_logging(**kwargs):
    """The worker logs as the web process does (settings.LOGGING: JSON lines with request ids)."""
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@worker_init.connect
def _tracing(**kwargs):
    """Before the worker runs a task: its spans join the traces of the requests that sent them (on only
    with OTEL_EXPORTER_OTLP_ENDPOINT; core/tracing.py)."""
    from core import tracing

    tracing.configure("blaze-worker")


@before_task_publish.connect
def _send_request_id(headers=None, **kwargs):
    from core import logs

    if headers is not None and logs.request_id.get():
        headers.setdefault(REQUEST_ID_HEADER, logs.request_id.get())


@task_prerun.connect
def _adopt_request_id(task=None, **kwargs):
    from core import logs

    logs.request_id.set(task.request.get(REQUEST_ID_HEADER) or "")


@task_postrun.connect
def _drop_request_id(**kwargs):
    from core import logs

    logs.request_id.set("")  # pool threads are reused: the next task must not inherit this id
