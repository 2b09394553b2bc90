from django.apps import AppConfig


class EnginesConfig(AppConfig):
    name = "engines"

    def ready(self):
        from . import lookups, tasks  # noqa: F401  (tasks connects the worker's start-up signals before the worker starts)

        lookups.connect()
