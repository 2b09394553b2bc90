"""Teams over /api/teams/: admins make them and their members, keys are issued for them, everyone
else reads their own; every change audited."""

import pytest
from django.db.models import ProtectedError

from accounts import services
from accounts.audit import Actor
from accounts.models import ApiKey, AuditEvent, Team
from core.errors import InvalidInput
from tests.conftest import make_user


@pytest.fixture
def admin_api(admin_user, client_for):
    return client_for(admin_user)


@pytest.fixture
def research(admin_user, viewer_user):
    """The team "research", vera (a viewer) its one member."""
    actor = Actor(user=admin_user)
    team = services.team_create(actor=actor, name="research", description="The lab")
    return services.team_member_add(actor=actor, team=team, user=viewer_user)


def create_team_key(client, team):
    return client.post("/api/keys/", {"name": "lab", "scopes": ["inference"], "team": team}, format="json")


def test_admin_creates_a_team_and_it_is_audited(admin_api):
    response = admin_api.post("/api/teams/", {"name": "research", "description": "The lab"}, format="json")

    assert response.status_code == 201
    assert response.json()["members"] == []
    event = AuditEvent.objects.get(action="team.create")
    assert (event.target, event.changes["name"]) == ("research", [None, "research"])


def test_admin_adds_members_and_each_is_audited(admin_api, viewer_user, operator_user):
    admin_api.post("/api/teams/", {"name": "research"}, format="json")

    admin_api.post("/api/teams/research/members/", {"username": "vera"}, format="json")
    response = admin_api.post("/api/teams/research/members/", {"username": "otto"}, format="json")

    assert response.status_code == 200
    assert response.json()["members"] == ["otto", "vera"]
    assert [e.data["member"] for e in AuditEvent.objects.filter(action="team.member_add").order_by("id")] == [
        "vera", "otto"]


def test_adding_a_member_twice_changes_nothing(admin_api, research):
    response = admin_api.post("/api/teams/research/members/", {"username": "vera"}, format="json")

    assert response.json()["members"] == ["vera"]
    assert AuditEvent.objects.filter(action="team.member_add").count() == 1


def test_a_member_issues_a_key_for_their_team(research, viewer_user, client_for):
    assert client_for(viewer_user).get("/api/me/").json()["teams"] == ["research"]  # which teams they may name
    response = create_team_key(client_for(viewer_user), "research")

    assert response.status_code == 201, response.json()
    assert response.json()["team"] == "research"
    assert ApiKey.objects.get(name="lab").team == research
    assert AuditEvent.objects.get(action="apikey.create").changes["team"] == [None, "research"]


def test_a_key_for_a_team_the_owner_is_not_in_is_a_400_naming_team(research, operator_user, client_for):
    response = create_team_key(client_for(operator_user), "research")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["team"]
    assert not ApiKey.objects.filter(name="lab").exists()


def test_a_team_that_does_not_exist_reads_as_one_you_are_not_in(research, operator_user, client_for):
    client = client_for(operator_user)

    for name in ("nowhere", "research"):
        assert create_team_key(client, name).json()["fields"] == {
            "team": [f"You are not a member of a team named '{name}'."]}


def test_the_service_refuses_a_team_the_owner_is_not_in(research, operator_user):
    with pytest.raises(InvalidInput) as refused:
        services.api_key_create(actor=Actor(user=operator_user), user=operator_user, name="x", scopes=["read"],
                                team=research)

    assert refused.value.field == "team"
    assert "otto is not a member of team research" in refused.value.message


def test_a_key_without_a_team_is_its_owners_own(operator_user, client_for):
    response = client_for(operator_user).post("/api/keys/", {"name": "mine", "scopes": ["read"]}, format="json")

    assert response.status_code == 201
    assert response.json()["team"] is None


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_non_admins_cannot_change_teams(research, client_for, role):
    client = client_for(make_user(f"some-{role}", role))

    assert client.post("/api/teams/", {"name": "mine"}, format="json").status_code == 403
    assert client.patch("/api/teams/research/", {"description": "x"}, format="json").status_code == 403
    assert client.post("/api/teams/research/members/", {"username": f"some-{role}"}, format="json").status_code == 403
    assert client.delete("/api/teams/research/members/vera/").status_code == 403
    assert client.delete("/api/teams/research/").status_code == 403
    assert list(Team.objects.values_list("name", flat=True)) == ["research"]
    assert not AuditEvent.objects.filter(action__startswith="team.", actor__startswith="some-").exists()


def test_a_non_admin_reads_only_their_own_teams(research, admin_user, viewer_user, operator_user, client_for):
    services.team_create(actor=Actor(user=admin_user), name="ops")
    vera, otto = client_for(viewer_user), client_for(operator_user)

    assert [team["name"] for team in vera.get("/api/teams/").json()["results"]] == ["research"]
    assert vera.get("/api/teams/research/").json()["members"] == ["vera"]
    assert vera.get("/api/teams/ops/").status_code == 404
    assert otto.get("/api/teams/").json()["results"] == []
    assert [team["name"] for team in client_for(admin_user).get("/api/teams/").json()["results"]] == ["ops", "research"]


@pytest.mark.parametrize("body, field", [
    ({"name": "not a slug"}, "name"),
    ({"name": ""}, "name"),
    ({}, "name"),
    ({"name": "x" * 51}, "name"),
    ({"name": "ok", "description": "x" * 301}, "description"),
    ({"name": "ok", "members": ["vera"]}, "members"),
    ({"name": "ok", "colour": "red"}, "colour"),
    ({"name": 5}, "name"),
])
def test_bad_team_input_is_a_400_naming_the_field(admin_api, body, field):
    response = admin_api.post("/api/teams/", body, format="json")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == [field]
    assert not Team.objects.exists()


@pytest.mark.parametrize("name", ["research", "Research"])
def test_a_taken_team_name_is_a_409_naming_name(admin_api, research, name):
    response = admin_api.post("/api/teams/", {"name": name}, format="json")

    assert response.status_code == 409
    assert list(response.json()["fields"]) == ["name"]


@pytest.mark.parametrize("body", [{}, {"username": "nobody"}, {"username": 7}])
def test_adding_no_such_user_is_a_400_naming_username(admin_api, research, body):
    response = admin_api.post("/api/teams/research/members/", body, format="json")

    assert response.status_code == 400
    assert list(response.json()["fields"]) == ["username"]


def test_an_update_is_audited_with_its_changes(admin_api, research):
    response = admin_api.patch("/api/teams/research/", {"name": "lab", "description": "Renamed"}, format="json")

    assert response.status_code == 200
    assert response.json()["members"] == ["vera"]
    assert AuditEvent.objects.get(action="team.update").changes == {
        "name": ["research", "lab"], "description": ["The lab", "Renamed"]}


def test_a_member_with_a_live_key_for_the_team_stays_until_it_is_revoked(admin_api, research, viewer_user, key_for):
    key, _ = key_for(viewer_user, team=research)

    refused = admin_api.delete("/api/teams/research/members/vera/")
    assert refused.status_code == 409
    assert "vera has 1 live API key for team research (test key): revoke them first." in refused.json()["error"]

    services.api_key_revoke(actor=Actor.system("test"), key=key)
    assert admin_api.delete("/api/teams/research/members/vera/").status_code == 204
    assert not research.members.exists()
    assert AuditEvent.objects.get(action="team.member_remove").data == {"member": "vera"}


def test_removing_someone_who_is_not_a_member_is_a_404(admin_api, research, operator_user):
    assert admin_api.delete("/api/teams/research/members/otto/").status_code == 404


def test_a_team_with_a_live_key_is_not_deleted_until_it_is_revoked(admin_api, research, viewer_user, key_for):
    key, _ = key_for(viewer_user, team=research)

    refused = admin_api.delete("/api/teams/research/")
    assert refused.status_code == 409
    assert "revoke them first" in refused.json()["error"]

    services.api_key_revoke(actor=Actor.system("test"), key=key)
    assert admin_api.delete("/api/teams/research/").status_code == 204
    assert not Team.objects.exists()
    key.refresh_from_db()
    assert key.team is None  # revoked for good, it forgets the team; its create event still names it
    event = AuditEvent.objects.get(action="team.delete")
    assert event.data == {"members": ["vera"], "detached_keys": [key.pk]}
    assert event.changes["name"] == ["research", None]


def test_a_team_cannot_be_deleted_from_under_a_key_by_any_path(research, viewer_user, key_for):
    key_for(viewer_user, team=research)
    with pytest.raises(ProtectedError):
        research.delete()
