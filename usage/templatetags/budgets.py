"""`{% keys_with_budgets keys as rows %}`: the API keys page's budget column (the page is accounts', the
budgets usage's: the layers let usage read accounts, not the other way round)."""

import redis
from django import template

from usage import budgets

register = template.Library()


@register.simple_tag
def keys_with_budgets(keys):
    """[(key, [{"budget", "left", "of", "resets_at"}, …])] in the keys' order, the least room left first;
    [(key, None)] while Redis (where budgets are counted) does not answer: the page still opens."""
    keys = list(keys)
    try:
        found = budgets.of_keys(keys)
    except redis.RedisError:
        return [(key, None) for key in keys]
    return [(key, [{"budget": budget, "left": budget.amount(standing.remaining), "of": budget.amount(budget.limit),
                    "resets_at": standing.resets_at} for budget, standing in found.get(key.pk, ())])
            for key in keys]
