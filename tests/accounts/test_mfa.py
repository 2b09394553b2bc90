"""TOTP two-factor sign-in with real codes: enrolment, sign-in, the API, and the per-role requirement."""

import pytest
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import AuditEvent, RolePolicy
from tests.conftest import PASSWORD


def code_for(device):
    """The code an authenticator app shows right now."""
    code = totp(device.bin_key, step=device.step, t0=device.t0, digits=device.digits, drift=device.drift)
    return f"{code:0{device.digits}d}"


def wrong_code_for(device):
    return f"{(int(code_for(device)) + 1) % 10**device.digits:0{device.digits}d}"


def sign_in(client, otp=""):
    return client.post("/login/", {"username": "otto", "password": PASSWORD, "otp": otp})


@pytest.fixture
def device(operator_user):
    """otto's confirmed authenticator."""
    return TOTPDevice.objects.create(user=operator_user, name="phone", confirmed=True)


@pytest.fixture
def operator_mfa_required(db):
    RolePolicy.objects.filter(group__name="operator").update(mfa_required=True)


def test_enrolment_is_confirmed_by_a_real_code(client, operator_user):
    client.force_login(operator_user)
    client.post("/account/mfa/enrol/")
    pending = TOTPDevice.objects.get(user=operator_user, confirmed=False)

    response = client.post("/account/mfa/confirm/", {"token": code_for(pending)})
    assert response["Location"] == "/account/"
    pending.refresh_from_db()
    assert pending.confirmed
    assert AuditEvent.objects.filter(action="mfa.enrol", actor="otto").count() == 1


def test_enrolment_page_shows_the_secret_to_scan(client, operator_user):
    client.force_login(operator_user)
    client.post("/account/mfa/enrol/")

    pending = TOTPDevice.objects.get(user=operator_user, confirmed=False)
    assert pending.bin_key.hex() in client.get("/account/").content.decode()


def test_wrong_code_does_not_confirm(client, operator_user):
    client.force_login(operator_user)
    client.post("/account/mfa/enrol/")
    pending = TOTPDevice.objects.get(user=operator_user, confirmed=False)

    response = client.post("/account/mfa/confirm/", {"token": wrong_code_for(pending)}, follow=True)
    assert "That code is not right" in response.content.decode()
    pending.refresh_from_db()
    assert not pending.confirmed
    assert not AuditEvent.objects.filter(action="mfa.enrol").exists()


def test_enrolled_sign_in_without_code_asks_for_it(client, device):
    response = sign_in(client)

    assert "enter the 6-digit code" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_enrolled_sign_in_with_wrong_code_fails(client, device):
    response = sign_in(client, wrong_code_for(device))

    assert "incorrect or expired" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.get(action="auth.login_failed").data == {"reason": "bad TOTP code"}


def test_enrolled_sign_in_with_right_code_succeeds(client, device):
    response = sign_in(client, code_for(device))

    assert response["Location"] == "/"  # the overview
    assert AuditEvent.objects.get(action="auth.login").data == {"mfa": True}


def test_code_just_used_to_confirm_cannot_sign_in_again(client, operator_user):
    client.force_login(operator_user)
    client.post("/account/mfa/enrol/")
    pending = TOTPDevice.objects.get(user=operator_user, confirmed=False)
    code = code_for(pending)
    client.post("/account/mfa/confirm/", {"token": code})
    client.logout()

    assert "incorrect or expired" in sign_in(client, code).content.decode()


def test_enrolment_then_sign_in_with_a_fresh_code(client, operator_user):
    client.force_login(operator_user)
    client.post("/account/mfa/enrol/")
    client.post("/account/mfa/confirm/", {"token": code_for(TOTPDevice.objects.get(user=operator_user))})
    client.logout()
    # The confirming code is spent; pretend the phone has moved on to the next one.
    TOTPDevice.objects.filter(user=operator_user).update(last_t=-1)

    assert sign_in(client, code_for(TOTPDevice.objects.get(user=operator_user))).status_code == 302


def test_api_token_requires_the_code(api, device):
    response = api.post("/api/token/", {"username": "otto", "password": PASSWORD})

    assert response.status_code == 401
    assert list(response.json()["fields"]) == ["otp"]
    assert api.post("/api/token/",
                    {"username": "otto", "password": PASSWORD, "otp": code_for(device)}).status_code == 200


def test_disable_removes_the_device_and_is_audited(client, device):
    sign_in(client, code_for(device))

    client.post("/account/mfa/disable/")
    assert not TOTPDevice.objects.filter(user=device.user).exists()
    assert AuditEvent.objects.filter(action="mfa.disable", actor="otto").count() == 1


def test_admin_requires_mfa_for_a_role(client, admin_user):
    client.force_login(admin_user)

    assert client.post("/roles/operator/policy/", {"mfa_required": "on"})["Location"] == "/users/"
    assert RolePolicy.objects.get(group__name="operator").mfa_required
    event = AuditEvent.objects.get(action="role.policy_update")
    assert (event.actor, event.changes) == ("ada", {"mfa_required": [False, True]})


def test_operator_cannot_change_role_policy(client, operator_user):
    client.force_login(operator_user)

    assert client.post("/roles/operator/policy/", {"mfa_required": "on"}).status_code == 403
    assert not RolePolicy.objects.get(group__name="operator").mfa_required


def test_required_mfa_sends_unenrolled_user_to_account_page(client, operator_user, operator_mfa_required):
    assert sign_in(client).status_code == 302

    response = client.get("/engines/")
    assert response.status_code == 302
    assert response["Location"] == "/account/"


def test_required_mfa_refuses_api_token_until_enrolled(api, operator_user, operator_mfa_required):
    response = api.post("/api/token/", {"username": "otto", "password": PASSWORD})

    assert response.status_code == 401
    assert "enrol" in response.json()["error"]


def test_required_mfa_cannot_be_disabled(client, device, operator_mfa_required):
    sign_in(client, code_for(device))

    response = client.post("/account/mfa/disable/", follow=True)
    assert "cannot be turned off" in response.content.decode()
    assert TOTPDevice.objects.filter(user=device.user).exists()
    assert not AuditEvent.objects.filter(action="mfa.disable").exists()


def test_required_mfa_is_satisfied_by_signing_in_with_a_code(client, device, operator_mfa_required):
    sign_in(client, code_for(device))

    assert client.get("/engines/").status_code == 200
