"""The three roles as groups with real permissions (see accounts/roles.py)."""

from django.db import migrations

from accounts.roles import ROLE_PERMISSIONS, sync_roles


def grant(apps, schema_editor):
    sync_roles(apps)


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
