from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from accounts.audit import Actor

from . import services
from .forms import RateLimitPolicyForm
from .models import RateLimitPolicy
from .selectors import policy_list, policy_usage


@permission_required("ratelimits.view_ratelimitpolicy", raise_exception=True)
def policy_page(request):
    rows = [{"policy": policy, "usage": policy_usage(policy)} for policy in policy_list()]
    return render(request, "ratelimits/list.html", {"rows": rows})


def _policy_form(request, policy):
    form = RateLimitPolicyForm(request.POST or None, instance=policy)
    if request.method == "POST" and form.is_valid():
        actor = Actor.from_request(request)
        if policy:
            # The form has written the new values onto its instance already; the service diffs the stored row.
            stored = RateLimitPolicy.objects.get(pk=policy.pk)
            fields = {name: form.cleaned_data[name] for name in form.changed_data}
            policy = services.policy_update(actor=actor, policy=stored, **fields)
            messages.success(request, f"Policy {policy.name} saved.")
        else:
            policy = services.policy_create(actor=actor, **form.cleaned_data)
            messages.success(request, f"Policy {policy.name} created.")
        return redirect("ratelimits:list")
    return render(request, "ratelimits/form.html", {"form": form, "policy": policy}, status=400 if form.errors else 200)


@permission_required("ratelimits.add_ratelimitpolicy", raise_exception=True)
def policy_create(request):
    return _policy_form(request, None)


@permission_required("ratelimits.change_ratelimitpolicy", raise_exception=True)
def policy_edit(request, pk):
    return _policy_form(request, get_object_or_404(RateLimitPolicy, pk=pk))


@permission_required("ratelimits.change_ratelimitpolicy", raise_exception=True)
@require_POST
def policy_toggle(request, pk):
    policy = get_object_or_404(RateLimitPolicy, pk=pk)
    services.policy_update(actor=Actor.from_request(request), policy=policy, enabled=not policy.enabled)
    messages.success(request, f"Policy {policy.name} {'enabled' if policy.enabled else 'disabled'}.")
    return redirect("ratelimits:list")


@permission_required("ratelimits.delete_ratelimitpolicy", raise_exception=True)
@require_POST
def policy_delete(request, pk):
    policy = get_object_or_404(RateLimitPolicy, pk=pk)
    services.policy_delete(actor=Actor.from_request(request), policy=policy)
    messages.success(request, f"Policy {policy.name} deleted.")
    return redirect("ratelimits:list")
