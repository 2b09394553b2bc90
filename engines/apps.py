from django.apps import AppConfig


class EnginesConfig(AppConfig):
    name = "engines"

    def ready(self):
        from . import tasks  # noqa: F401  (connects the worker's start-up signals before the worker starts)
