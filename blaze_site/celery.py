import os

from celery import Celery
from kombu import Queue
from kombu.common import Broadcast

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "blaze_site.settings")

app = Celery("blaze_site")
app.config_from_object("django.conf:settings", namespace="CELERY")
# The shared queue, plus a broadcast queue every worker hears (unload an engine everywhere).
# Each worker adds a queue of its own at start-up (engines/tasks.py).
CONTROL = Broadcast("blaze.control")
app.conf.task_default_queue = "blaze"
app.conf.task_queues = (Queue("blaze"), CONTROL)
app.autodiscover_tasks()
