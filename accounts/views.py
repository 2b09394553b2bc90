from datetime import timedelta
from io import BytesIO

import qrcode
import qrcode.image.svg
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login, logout, update_session_auth_hash
from django.contrib.auth.decorators import login_required, permission_required
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.auth.models import Group
from django.core.paginator import Paginator
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_otp import login as otp_login

from core.errors import InvalidInput, NotAuthenticated

from . import services
from .audit import Actor
from .csv_export import audit_csv_response
from .forms import ApiKeyForm, AuditFilterForm, LoginForm, TeamForm, UserCreateForm
from .models import ROLES, User
from .selectors import api_keys_visible_to, audit_events, confirmed_totp_device, teams_visible_to


def login_view(request):
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    form = LoginForm(request.POST or None)
    next_url = request.POST.get("next") or request.GET.get("next", "")
    if request.method == "POST" and form.is_valid():
        try:
            user, device = services.sign_in(actor=Actor.from_request(request), request=request, **form.cleaned_data)
        except NotAuthenticated as exc:
            form.add_error(exc.field, str(exc))
        else:
            login(request, user)
            if device is not None:
                otp_login(request, device)
            safe = url_has_allowed_host_and_scheme(next_url, {request.get_host()}, request.is_secure())
            return redirect(next_url if next_url and safe else settings.LOGIN_REDIRECT_URL)
    return render(request, "accounts/login.html", {"form": form, "next": next_url})


@require_POST
def logout_view(request):
    if request.user.is_authenticated:
        services.sign_out(actor=Actor.from_request(request))
    logout(request)
    messages.info(request, "You are signed out.")
    return redirect("login")


def _qr_svg(text):
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, box_size=8)
    buffer = BytesIO()
    image.save(buffer)
    return buffer.getvalue().decode()


@login_required
def account(request):
    pending = request.user.totpdevice_set.filter(confirmed=False).first()
    return render(request, "accounts/account.html", {
        "mfa_device": confirmed_totp_device(request.user),
        "pending": pending,
        "pending_qr": _qr_svg(pending.config_url) if pending else None,
        "pending_secret": pending.bin_key.hex() if pending else None,
        "password_form": PasswordChangeForm(request.user),
    })


@login_required
@require_POST
def mfa_enrol(request):
    services.mfa_start(user=request.user)
    return redirect("account")


@login_required
@require_POST
def mfa_confirm(request):
    try:
        device = services.mfa_confirm(
            actor=Actor.from_request(request), user=request.user, token=request.POST.get("token")
        )
    except InvalidInput as exc:
        messages.error(request, exc.message)
    else:
        otp_login(request, device)
        messages.success(request, "Two-factor authentication is on. You will need a code at every sign-in.")
    return redirect("account")


@login_required
@require_POST
def mfa_disable(request):
    try:
        services.mfa_disable(actor=Actor.from_request(request), user=request.user)
    except InvalidInput as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, "Two-factor authentication is off.")
    return redirect("account")


@login_required
@require_POST
def password_change(request):
    form = PasswordChangeForm(request.user, request.POST)
    if form.is_valid():
        services.password_change(
            actor=Actor.from_request(request), user=request.user, new_password=form.cleaned_data["new_password1"]
        )
        update_session_auth_hash(request, request.user)
        messages.success(request, "Your password is changed.")
        return redirect("account")
    return render(request, "accounts/account.html", {
        "mfa_device": confirmed_totp_device(request.user), "password_form": form,
    }, status=400)


@login_required
def api_keys(request):
    form = ApiKeyForm(request.POST or None, user=request.user)
    created = None
    if request.method == "POST" and form.is_valid():
        days = form.cleaned_data["expires_in_days"]
        try:
            key, raw_key = services.api_key_create(
                actor=Actor.from_request(request), user=request.user, name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"], expires_at=timezone.now() + timedelta(days=days) if days else None,
                team=form.cleaned_data["team"],
            )
        except InvalidInput as exc:
            form.add_error(exc.field, exc.message)
        else:
            created = {"key": key, "raw": raw_key}
            form = ApiKeyForm(user=request.user)
    return render(request, "accounts/api_keys.html", {
        "form": form, "created": created, "keys": api_keys_visible_to(request.user),
        "show_owner": request.user.has_perm("accounts.view_all_apikeys"),
    }, status=400 if form.errors else 200)


@login_required
@require_POST
def api_key_revoke(request, pk):
    key = get_object_or_404(api_keys_visible_to(request.user), pk=pk)
    services.api_key_revoke(actor=Actor.from_request(request), key=key)
    messages.success(request, f"Key “{key.name}” is revoked; requests with it now get 401.")
    return redirect("api_keys")


@permission_required("accounts.view_auditevent", raise_exception=True)
def audit_log(request):
    form = AuditFilterForm(request.GET or None)
    form.is_valid()  # the filters that parse apply; the others show their error
    events = audit_events(**{k: v for k, v in getattr(form, "cleaned_data", {}).items() if v})
    if request.GET.get("export") == "csv":
        return audit_csv_response(events)
    page = Paginator(events, 50).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "accounts/audit.html", {"form": form, "page": page, "query": query.urlencode()})


@permission_required("accounts.view_user", raise_exception=True)
def users(request):
    form = UserCreateForm(request.POST or None)
    if request.method == "POST":
        if not request.user.has_perm("accounts.add_user"):
            return render(request, "403.html", status=403)
        if form.is_valid():
            try:
                user = services.user_create(actor=Actor.from_request(request), **form.cleaned_data)
            except InvalidInput as exc:
                form.add_error(exc.field, exc.message)
            else:
                messages.success(request, f"User {user.username} created with role {user.role}.")
                return redirect("users")
    return render(request, "accounts/users.html", {
        "form": form, "users": User.objects.prefetch_related("groups").order_by("username"), "roles": ROLES,
        "policies": {group.name: getattr(group, "policy", None) for group in Group.objects.filter(name__in=ROLES)},
    }, status=400 if form.errors else 200)


@permission_required("accounts.change_user", raise_exception=True)
@require_POST
def user_update(request, pk):
    user = get_object_or_404(User, pk=pk)
    is_active = {"true": True, "false": False}.get(request.POST.get("is_active"))
    if user == request.user and is_active is False:
        messages.error(request, "You cannot deactivate yourself.")
        return redirect("users")
    try:
        services.user_update(
            actor=Actor.from_request(request), user=user, role=request.POST.get("role") or None, is_active=is_active,
        )
    except InvalidInput as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"User {user.username} updated.")
    return redirect("users")


@permission_required("accounts.change_user", raise_exception=True)
@require_POST
def role_policy(request, role):
    try:
        services.role_policy_set(
            actor=Actor.from_request(request), role=role, mfa_required=request.POST.get("mfa_required") == "on"
        )
    except InvalidInput as exc:
        messages.error(request, exc.message)
    return redirect("users")


@permission_required("accounts.view_team", raise_exception=True)
def teams(request):
    form = TeamForm(request.POST or None)
    if request.method == "POST":
        if not request.user.has_perm("accounts.add_team"):
            return render(request, "403.html", status=403)
        if form.is_valid():
            try:
                team = services.team_create(actor=Actor.from_request(request), **form.cleaned_data)
            except InvalidInput as exc:
                form.add_error(exc.field, exc.message)
            else:
                messages.success(request, f"Team {team.name} created: add its members below.")
                return redirect("team_edit", name=team.name)
    return render(request, "accounts/teams.html", {"form": form, "teams": teams_visible_to(request.user)},
                  status=400 if form.errors else 200)


@permission_required("accounts.view_team", raise_exception=True)
def team_edit(request, name):
    team = get_object_or_404(teams_visible_to(request.user).prefetch_related("members__groups"), name=name)
    form = TeamForm(request.POST or None, initial={"name": team.name, "description": team.description})
    if request.method == "POST":
        if not request.user.has_perm("accounts.change_team"):
            return render(request, "403.html", status=403)
        if form.is_valid():
            try:
                services.team_update(actor=Actor.from_request(request), team=team, **form.cleaned_data)
            except InvalidInput as exc:
                form.add_error(exc.field, exc.message)
                team.refresh_from_db()  # the refused name stays in the form, not in the page's links
            else:
                messages.success(request, f"Team {team.name} saved.")
                return redirect("team_edit", name=team.name)
    return render(request, "accounts/team.html", {
        "team": team, "form": form, "keys": team.api_keys.select_related("user"),
        "candidates": User.objects.exclude(teams=team).order_by("username"),
    }, status=400 if form.errors else 200)


@permission_required("accounts.delete_team", raise_exception=True)
@require_POST
def team_delete(request, name):
    team = get_object_or_404(teams_visible_to(request.user), name=name)
    try:
        services.team_delete(actor=Actor.from_request(request), team=team)
    except InvalidInput as exc:
        messages.error(request, exc.message)
        return redirect("team_edit", name=name)
    messages.success(request, f"Team {name} deleted.")
    return redirect("teams")


@permission_required("accounts.change_team", raise_exception=True)
@require_POST
def team_member_add(request, name):
    team = get_object_or_404(teams_visible_to(request.user), name=name)
    user = User.objects.filter(username=request.POST.get("username", "")).first()
    if user is None:
        messages.error(request, "Choose a user to add.")
    else:
        services.team_member_add(actor=Actor.from_request(request), team=team, user=user)
        messages.success(request, f"{user.username} is now a member of team {team.name}.")
    return redirect("team_edit", name=name)


@permission_required("accounts.change_team", raise_exception=True)
@require_POST
def team_member_remove(request, name, username):
    team = get_object_or_404(teams_visible_to(request.user), name=name)
    user = get_object_or_404(team.members, username=username)
    try:
        services.team_member_remove(actor=Actor.from_request(request), team=team, user=user)
    except InvalidInput as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{username} is no longer a member of team {team.name}.")
    return redirect("team_edit", name=name)
