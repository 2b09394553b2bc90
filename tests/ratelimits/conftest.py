"""Policies made through the service (as operators make them)."""

import itertools

import pytest

from accounts.audit import Actor
from ratelimits import services

_names = itertools.count(1)


@pytest.fixture
def make_policy(db, django_capture_on_commit_callbacks):
    """make_policy(**fields) → a saved policy (global, fixed window, 2 per 60 s unless told),
    committed the way a request commits it, so this process's policy cache is refreshed."""

    def make(**fields):
        fields = {"name": f"policy-{next(_names)}", "scope": "global", "algorithm": "fixed_window",
                  "limit": 2, "period_seconds": 60, **fields}
        with django_capture_on_commit_callbacks(execute=True):
            return services.policy_create(actor=Actor.system("test"), **fields)

    return make
