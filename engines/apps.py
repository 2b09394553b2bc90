from django.apps import AppConfig


class EnginesConfig(AppConfig):
    name = "engines"

    def ready(self):
        from blaze_site import lookups

        from . import tasks  # noqa: F401  (connects the worker's start-up signals before the worker starts)
        from .models import Engine, Route, RouteTarget

        lookups.watch(Engine, Route, RouteTarget)  # /v1's model plans
