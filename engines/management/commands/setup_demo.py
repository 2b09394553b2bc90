import os
import secrets

from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand
from django.db import transaction

from accounts import services
from accounts.audit import Actor
from accounts.models import User
from engines import services as engine_services
from engines.demo import demo_engines
from engines.models import Engine
from engines.serializers import llm_config, validate_config


class Command(BaseCommand):
    help = "Create the admin account and register the demo engines. Safe to run again: nothing is duplicated."

    def handle(self, *args, **options):
        engines = demo_engines(say=self.stdout.write)  # slow the first time: outside the transaction
        with transaction.atomic():
            self._setup(engines)

    def _setup(self, engines):
        actor = Actor.system("setup_demo")
        admin = User.objects.filter(username="admin").first()
        if admin is None:
            password = os.environ.get("BLAZE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            admin = services.user_create(actor=actor, username="admin", password=password, role="admin")
            admin.is_staff = admin.is_superuser = True
            admin.save(update_fields=["is_staff", "is_superuser"])
            shown = "(from BLAZE_ADMIN_PASSWORD)" if os.environ.get("BLAZE_ADMIN_PASSWORD") else password
            self.stdout.write(self.style.SUCCESS(f"Created user 'admin' with password: {shown}"))
            self.stdout.write("  (shown once; change it on your account page)")
            _, raw_key = services.api_key_create(actor=actor, user=admin, name="demo", scopes=["inference", "read"])
            self.stdout.write(self.style.SUCCESS(f"Created API key 'demo' for admin: {raw_key}"))
            self.stdout.write("  (shown once; try: curl -H 'Authorization: Bearer <key>' http://127.0.0.1:8000/v1/models)")
        else:
            if not admin.groups.filter(name="admin").exists():
                admin.groups.add(Group.objects.get(name="admin"))
            self.stdout.write("User 'admin' exists; password unchanged.")

        for name, fields in engines:
            if Engine.objects.filter(name=name).exists():
                self.stdout.write(f"Engine '{name}' is registered.")
                continue
            config = validate_config(fields["kind"], fields["config"])
            if fields["kind"] == "llm":
                config = llm_config(fields["model"], config)
            fields = {**fields, "config": config}
            engine_services.engine_create(actor=actor, name=name, **fields)
            self.stdout.write(self.style.SUCCESS(f"Registered demo engine '{name}' ({fields['kind']})."))
