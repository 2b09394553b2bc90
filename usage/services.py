"""Writes to prices and budgets, each recorded in the audit log. A price applies to the usage stored
after it is saved: records keep the cost computed when they were stored. A budget change applies in
this process at once and in the others within BLAZE_BUDGET_CACHE_SECONDS."""

from django.db import transaction

from accounts import audit
from core import errors

from . import budgets
from .models import Budget, Price


@transaction.atomic
def price_create(*, actor, **fields):
    price = Price.objects.create(**fields)
    audit.record(actor=actor, action="price.create", target=price, changes=audit.diff({}, price.audit_fields()))
    return price


@transaction.atomic
def price_update(*, actor, price, **fields):
    before = price.audit_fields()
    for name, value in fields.items():
        setattr(price, name, value)
    price.save()
    changes = audit.diff(before, price.audit_fields())
    if changes:
        audit.record(actor=actor, action="price.update", target=price, changes=changes)
    return price


@transaction.atomic
def price_delete(*, actor, price):
    audit.record(actor=actor, action="price.delete", target=price, changes=audit.diff(price.audit_fields(), {}))
    price.delete()


@transaction.atomic
def budget_create(*, actor, **fields):
    budget = errors.checked(Budget(**fields))
    budget.save()
    audit.record(actor=actor, action="budget.create", target=budget, changes=audit.diff({}, budget.audit_fields()))
    transaction.on_commit(budgets.forget)
    return budget


@transaction.atomic
def budget_update(*, actor, budget, **fields):
    before = budget.audit_fields()
    for name, value in fields.items():
        setattr(budget, name, value)
    errors.checked(budget).save()
    changes = audit.diff(before, budget.audit_fields())
    if changes:
        audit.record(actor=actor, action="budget.update", target=budget, changes=changes)
        transaction.on_commit(budgets.forget)
    return budget


@transaction.atomic
def budget_delete(*, actor, budget):
    audit.record(actor=actor, action="budget.delete", target=budget, changes=audit.diff(budget.audit_fields(), {}))
    budget.delete()
    transaction.on_commit(budgets.forget)
