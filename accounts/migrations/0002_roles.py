"""The three roles as groups with real permissions. Later migrations extend them as apps add models."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

ROLE_PERMISSIONS = {
    "viewer": [
        "engines.view_engine",
        "accounts.add_apikey", "accounts.view_apikey",
    ],
    "operator": [
        "engines.view_engine", "engines.add_engine", "engines.change_engine", "engines.delete_engine",
        "accounts.add_apikey", "accounts.view_apikey",
    ],
    "admin": [
        "engines.view_engine", "engines.add_engine", "engines.change_engine", "engines.delete_engine",
        "accounts.add_apikey", "accounts.view_apikey", "accounts.view_all_apikeys",
        "accounts.view_user", "accounts.add_user", "accounts.change_user",
        "accounts.view_auditevent",
    ],
}


def grant(apps, schema_editor):
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    RolePolicy = apps.get_model("accounts", "RolePolicy")
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        for name in names:
            app_label, codename = name.split(".")
            group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
        RolePolicy.objects.get_or_create(group=group)


def revoke(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name__in=ROLE_PERMISSIONS).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0001_initial"),
        ("engines", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]
    operations = [migrations.RunPython(grant, revoke)]
