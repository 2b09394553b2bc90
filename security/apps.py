from django.apps import AppConfig


class SecurityConfig(AppConfig):
    name = "security"

    def ready(self):
        from blaze_site import lookups

        from .models import IpBlock

        lookups.watch(IpBlock)  # the block list every request is screened against
