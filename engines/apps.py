from django.apps import AppConfig


class EnginesConfig(AppConfig):
    name = "engines"

    def ready(self):
        from core import lookups
        from engines.models import Adapter, Engine, Route, RouteFallback, RouteTarget

        lookups.watch(Engine, Route, RouteTarget, RouteFallback, Adapter)  # /v1's model plans
