from django.apps import AppConfig


class SecurityConfig(AppConfig):
    name = "security"

    def ready(self):
        from core import lookups

        from .models import IpBlock

        lookups.watch(IpBlock)  # the block list every request is screened against
