"""The three roles, as groups, and the permissions each holds: the one table to edit when an app
adds a model. Synced by migration 0002 and after every `migrate` (post_migrate), so a role gains a
new app's permissions when that app's migrations run, and test-database flushes restore them."""

ROLE_PERMISSIONS = {
    "viewer": [
        "engines.view_engine", "engines.view_route",
        "accounts.add_apikey", "accounts.view_apikey",
        "monitoring.view_alertrule", "monitoring.view_alertreceiver", "monitoring.view_alertsilence",
        "usage.view_price",
    ],
    "operator": [
        "engines.view_engine", "engines.add_engine", "engines.change_engine", "engines.delete_engine",
        "engines.manage_cache",
        "engines.view_route", "engines.add_route", "engines.change_route", "engines.delete_route",
        "accounts.add_apikey", "accounts.view_apikey",
        "ratelimits.view_ratelimitpolicy", "ratelimits.add_ratelimitpolicy",
        "ratelimits.change_ratelimitpolicy", "ratelimits.delete_ratelimitpolicy",
        "monitoring.view_alertrule", "monitoring.add_alertrule", "monitoring.change_alertrule",
        "monitoring.delete_alertrule", "monitoring.view_alertreceiver", "monitoring.add_alertreceiver",
        "monitoring.change_alertreceiver", "monitoring.delete_alertreceiver", "monitoring.view_alertsilence",
        "monitoring.add_alertsilence", "monitoring.change_alertsilence", "monitoring.delete_alertsilence",
        "usage.view_price", "usage.add_price", "usage.change_price", "usage.delete_price", "usage.view_budget",
    ],
    "admin": [
        "engines.view_engine", "engines.add_engine", "engines.change_engine", "engines.delete_engine",
        "engines.manage_cache",
        "engines.view_route", "engines.add_route", "engines.change_route", "engines.delete_route",
        "accounts.add_apikey", "accounts.view_apikey", "accounts.view_all_apikeys",
        "accounts.view_user", "accounts.add_user", "accounts.change_user",
        "accounts.view_team", "accounts.add_team", "accounts.change_team", "accounts.delete_team",
        "accounts.view_auditevent",
        "ratelimits.view_ratelimitpolicy", "ratelimits.add_ratelimitpolicy",
        "ratelimits.change_ratelimitpolicy", "ratelimits.delete_ratelimitpolicy",
        "security.view_ipblock", "security.add_ipblock", "security.change_ipblock", "security.delete_ipblock",
        "monitoring.view_alertrule", "monitoring.add_alertrule", "monitoring.change_alertrule",
        "monitoring.delete_alertrule", "monitoring.view_alertreceiver", "monitoring.add_alertreceiver",
        "monitoring.change_alertreceiver", "monitoring.delete_alertreceiver", "monitoring.view_alertsilence",
        "monitoring.add_alertsilence", "monitoring.change_alertsilence", "monitoring.delete_alertsilence",
        "usage.view_price", "usage.add_price", "usage.change_price", "usage.delete_price", "usage.view_all_usage",
        "usage.view_budget", "usage.add_budget", "usage.change_budget", "usage.delete_budget",
    ],
}


def sync_roles(apps):
    """Create the role groups and grant exactly the listed permissions (created first if need be)."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        # Historical app configs have no models module; create_permissions skips those unless set.
        models_module = getattr(app_config, "models_module", None)
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = models_module
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    RolePolicy = apps.get_model("accounts", "RolePolicy")
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for name in names:
            app_label, codename = name.split(".")
            wanted += Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        group.permissions.set(wanted)
        RolePolicy.objects.get_or_create(group=group)
