"""Writes to the rate-limit policies. Each records one audit event and, once committed, drops this
process's policy cache (other processes reload within BLAZE_RATELIMIT_POLICY_CACHE_SECONDS). Input was
validated before (form or serializer, both through `RateLimitPolicy.clean`)."""

from django.db import transaction

from accounts import audit

from .models import RateLimitPolicy
from .selectors import forget_active_policies


@transaction.atomic
def policy_create(*, actor, **fields):
    policy = RateLimitPolicy.objects.create(**fields)
    audit.record(actor=actor, action="ratelimit.create", target=policy, changes=audit.diff({}, policy.audit_fields()))
    transaction.on_commit(forget_active_policies)
    return policy


@transaction.atomic
def policy_update(*, actor, policy, **fields):
    before = policy.audit_fields()
    for name, value in fields.items():
        setattr(policy, name, value)
    policy.save()
    changes = audit.diff(before, policy.audit_fields())
    if changes:
        action = "ratelimit.update"
        if set(changes) == {"enabled"}:
            action = "ratelimit.enable" if policy.enabled else "ratelimit.disable"
        audit.record(actor=actor, action=action, target=policy, changes=changes)
        transaction.on_commit(forget_active_policies)
    return policy


@transaction.atomic
def policy_delete(*, actor, policy):
    audit.record(actor=actor, action="ratelimit.delete", target=policy, changes=audit.diff(policy.audit_fields(), {}))
    policy.delete()
    transaction.on_commit(forget_active_policies)
