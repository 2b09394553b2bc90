from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender, apps=None, **kwargs):
    from django.apps import apps as global_apps

    from .roles import sync_roles

    sync_roles(apps or global_apps)  # a flush sends post_migrate without `apps`


class AccountsConfig(AppConfig):
    name = "accounts"

    def ready(self):
        from django.contrib.auth.models import Group

        from core import lookups

        from .models import ApiKey, User

        # After auth's own post_migrate handler has created every app's permissions.
        post_migrate.connect(_sync_roles, sender=self, dispatch_uid="accounts.sync_roles")
        # /v1's API keys, with their owners' roles and permissions
        lookups.watch(ApiKey, User, Group, through=(
            User.groups.through, User.user_permissions.through, Group.permissions.through))
