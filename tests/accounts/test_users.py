"""Managing users over /api/users/ (admins) and changing your own password on the account page."""

import json

import pytest

from accounts.models import AuditEvent, User
from tests.conftest import PASSWORD

NEW_PASSWORD = "a-brand-new-passphrase-42"
NEWBIE = {"username": "newbie", "password": NEW_PASSWORD, "role": "viewer"}


@pytest.fixture
def admin_api(admin_user, client_for):
    return client_for(admin_user)


def all_events_json():
    return json.dumps(list(AuditEvent.objects.values()), default=str)


def test_admin_creates_a_user_and_it_is_audited(admin_api):
    response = admin_api.post("/api/users/", NEWBIE, format="json")

    assert response.status_code == 201
    assert response.json()["role"] == "viewer"
    changes = AuditEvent.objects.get(action="user.create").changes
    assert changes["username"] == [None, "newbie"]
    assert changes["role"] == [None, "viewer"]


def test_created_user_can_sign_in(admin_api, api):
    admin_api.post("/api/users/", NEWBIE, format="json")

    assert api.post("/api/token/", {"username": "newbie", "password": NEW_PASSWORD}).status_code == 200


def test_password_never_reaches_the_audit_log(admin_api):
    created = admin_api.post("/api/users/", NEWBIE, format="json")
    admin_api.patch(f"/api/users/{created.json()['id']}/", {"role": "operator"}, format="json")

    assert NEW_PASSWORD not in all_events_json()
    assert User.objects.get(username="newbie").password not in all_events_json()
    assert "password" not in created.json()


def test_create_without_password_is_400_naming_password(admin_api):
    response = admin_api.post("/api/users/", {"username": "newbie", "role": "viewer"}, format="json")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["password"]
    assert not User.objects.filter(username="newbie").exists()


def test_create_with_unknown_role_is_400_naming_role(admin_api):
    response = admin_api.post("/api/users/", {**NEWBIE, "role": "root"}, format="json")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["role"]


def test_user_can_be_created_inactive(admin_api, api):
    body = {**NEWBIE, "is_active": False}

    assert admin_api.post("/api/users/", body, format="json").status_code == 201
    assert AuditEvent.objects.get(action="user.create").changes["is_active"] == [None, False]
    assert api.post("/api/token/", {"username": "newbie", "password": NEW_PASSWORD}).status_code == 401


@pytest.mark.parametrize("username", ["vera", "VERA"])
def test_a_taken_username_is_409_naming_username(admin_api, viewer_user, username):
    response = admin_api.post("/api/users/", {**NEWBIE, "username": username}, format="json")

    assert response.status_code == 409
    assert list(response.json()["fields"]) == ["username"]
    assert response.json()["error"] == "username: A user with that username already exists."


def test_a_users_own_body_can_be_put_back(admin_api, viewer_user):
    body = admin_api.get(f"/api/users/{viewer_user.pk}/").json()

    response = admin_api.put(f"/api/users/{viewer_user.pk}/", {**body, "role": "operator"}, format="json")
    assert response.status_code == 200 and response.json()["role"] == "operator"


def test_a_username_cannot_change(admin_api, viewer_user):
    response = admin_api.patch(f"/api/users/{viewer_user.pk}/", {"username": "vera2"}, format="json")

    assert response.status_code == 400
    assert response.json()["fields"] == {"username": ["A username cannot change."]}


def test_role_change_is_one_role_change_event(admin_api, viewer_user):
    response = admin_api.patch(f"/api/users/{viewer_user.pk}/", {"role": "operator"}, format="json")

    assert response.json()["role"] == "operator"
    events = AuditEvent.objects.filter(action__startswith="user.")
    assert [(event.action, event.changes) for event in events] == [
        ("user.role_change", {"role": ["viewer", "operator"]}),
    ]


def test_role_change_takes_effect_at_once(admin_api, viewer_user, client_for):
    viewer = client_for(viewer_user)
    body = {"name": "embedder", "kind": "embedding", "model": "some-org/some-model"}
    assert viewer.post("/api/engines/", body, format="json").status_code == 403

    admin_api.patch(f"/api/users/{viewer_user.pk}/", {"role": "operator"}, format="json")
    assert viewer.post("/api/engines/", body, format="json").status_code == 201


def test_deactivation_is_a_user_update_event(admin_api, viewer_user):
    admin_api.patch(f"/api/users/{viewer_user.pk}/", {"is_active": False}, format="json")

    event = AuditEvent.objects.get(action="user.update")
    assert event.changes == {"is_active": [True, False]}
    assert event.target_id == str(viewer_user.pk)


def test_deactivated_user_is_shut_out_everywhere(admin_api, viewer_user, client_for, key_for, bearer, client, api):
    token_client = client_for(viewer_user)
    raw_key = key_for(viewer_user)[1]
    admin_api.patch(f"/api/users/{viewer_user.pk}/", {"is_active": False}, format="json")

    assert token_client.get("/api/me/").status_code == 401
    assert bearer(raw_key).get("/api/me/").status_code == 401
    assert api.post("/api/token/", {"username": "vera", "password": PASSWORD}).status_code == 401
    assert client.post("/login/", {"username": "vera", "password": PASSWORD}).status_code == 200
    assert "_auth_user_id" not in client.session


def test_admin_cannot_deactivate_themselves(admin_api, admin_user):
    response = admin_api.patch(f"/api/users/{admin_user.pk}/", {"is_active": False}, format="json")

    assert response.status_code == 403
    assert "yourself" in response.json()["error"]
    admin_user.refresh_from_db()
    assert admin_user.is_active
    assert not AuditEvent.objects.filter(action__startswith="user.").exists()


def test_password_cannot_be_set_through_the_users_api(admin_api, viewer_user):
    response = admin_api.patch(f"/api/users/{viewer_user.pk}/", {"password": NEW_PASSWORD}, format="json")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["password"]


def test_the_schema_documents_a_password_for_creating_a_user_only(admin_api):
    schemas = admin_api.get("/api/schema/?format=json").json()["components"]["schemas"]

    assert "password" in schemas["UserRequest"]["required"]
    assert "password" not in schemas["UserChangeRequest"]["properties"]
    assert "password" not in schemas["PatchedUserChangeRequest"]["properties"]


def test_operator_cannot_change_users(operator_user, viewer_user, client_for):
    response = client_for(operator_user).patch(f"/api/users/{viewer_user.pk}/", {"role": "admin"}, format="json")

    assert response.status_code == 403
    assert viewer_user.role == "viewer"


def test_password_change_is_audited_and_the_new_password_works(client, viewer_user, api):
    client.force_login(viewer_user)

    response = client.post("/account/password/", {
        "old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD,
    })
    assert response["Location"] == "/account/"
    assert AuditEvent.objects.filter(action="user.password_change", actor="vera").count() == 1
    assert api.post("/api/token/", {"username": "vera", "password": NEW_PASSWORD}).status_code == 200
    assert api.post("/api/token/", {"username": "vera", "password": PASSWORD}).status_code == 401
    assert NEW_PASSWORD not in all_events_json()


def test_password_change_keeps_the_session(client, viewer_user):
    client.force_login(viewer_user)
    client.post("/account/password/", {
        "old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD,
    })

    assert client.get("/account/").status_code == 200


def test_password_change_with_wrong_old_password_is_refused(client, viewer_user):
    client.force_login(viewer_user)

    response = client.post("/account/password/", {
        "old_password": "not-my-password", "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD,
    })
    assert response.status_code == 400
    assert not AuditEvent.objects.filter(action="user.password_change").exists()
    viewer_user.refresh_from_db()
    assert viewer_user.check_password(PASSWORD)
