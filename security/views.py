from datetime import timedelta

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from accounts.audit import Actor
from core.errors import InvalidInput

from . import services
from .forms import IpBlockForm
from .selectors import active_blocks, security_status


def _status_page(request, form, status=200):
    return render(request, "security/status.html", {**security_status(), "form": form}, status=status)


@permission_required("security.view_ipblock", raise_exception=True)
def status(request):
    """Security events, their counts by kind, the active blocks, and a form to block an address."""
    return _status_page(request, IpBlockForm())


@permission_required("security.add_ipblock", raise_exception=True)
@require_POST
def block(request):
    form = IpBlockForm(request.POST)
    if form.is_valid():
        hours = form.cleaned_data["expires_in_hours"]
        try:
            created = services.ip_block(
                actor=Actor.from_request(request), network=form.cleaned_data["network"],
                reason=form.cleaned_data["reason"],
                expires_at=timezone.now() + timedelta(hours=hours) if hours else None,
            )
        except InvalidInput as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, f"{created.network} is blocked: its requests now get 403.")
            return redirect("security:status")
    return _status_page(request, form, status=400)


@permission_required("security.delete_ipblock", raise_exception=True)
@require_POST
def unblock(request, pk):
    block = get_object_or_404(active_blocks(), pk=pk)
    services.ip_unblock(actor=Actor.from_request(request), block=block)
    messages.success(request, f"{block.network} is unblocked.")
    return redirect("security:status")
