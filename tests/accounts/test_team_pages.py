"""The Teams pages (admins) and a key issued for a team on the API keys page."""

import pytest

from accounts import services
from accounts.audit import Actor
from accounts.models import ApiKey, AuditEvent, Team


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def research(admin_user, viewer_user):
    actor = Actor(user=admin_user)
    return services.team_member_add(actor=actor, team=services.team_create(actor=actor, name="research"),
                                    user=viewer_user)


def test_admin_creates_a_team_and_lands_on_its_page(admin_client):
    response = admin_client.post("/teams/", {"name": "research", "description": "The lab"}, follow=True)

    assert response.redirect_chain[-1][0] == "/teams/research/"
    assert "Team research created" in response.content.decode()
    assert AuditEvent.objects.filter(action="team.create", target="research").exists()


def test_a_bad_name_is_shown_beside_its_field(admin_client, research):
    for name, message in (("not a slug", "letters, numbers, underscores or hyphens"),
                          ("Research", "A team with that name already exists.")):
        response = admin_client.post("/teams/", {"name": name})
        assert response.status_code == 400
        assert message in response.content.decode()
    assert list(Team.objects.values_list("name", flat=True)) == ["research"]


def test_admin_adds_and_removes_a_member(admin_client, research, operator_user):
    admin_client.post("/teams/research/members/", {"username": "otto"})
    assert sorted(research.members.values_list("username", flat=True)) == ["otto", "vera"]

    response = admin_client.post("/teams/research/members/otto/remove/", follow=True)
    assert "otto is no longer a member of team research." in response.content.decode()
    assert list(research.members.values_list("username", flat=True)) == ["vera"]
    assert AuditEvent.objects.filter(action__in=["team.member_add", "team.member_remove"]).count() == 3


def test_the_team_page_says_why_a_member_with_a_live_key_stays(admin_client, research, viewer_user, key_for):
    key_for(viewer_user, team=research)

    response = admin_client.post("/teams/research/members/vera/remove/", follow=True)

    assert "vera has 1 live API key for team research" in response.content.decode()
    assert research.members.filter(pk=viewer_user.pk).exists()


def test_a_rename_to_a_taken_name_keeps_the_page_on_the_team(admin_client, research, admin_user):
    services.team_create(actor=Actor(user=admin_user), name="ops")

    response = admin_client.post("/teams/research/", {"name": "ops", "description": ""})

    assert response.status_code == 400
    assert 'action="/teams/research/delete/"' in response.content.decode()


def test_admin_deletes_a_team(admin_client, research):
    response = admin_client.post("/teams/research/delete/", follow=True)

    assert "Team research deleted." in response.content.decode()
    assert not Team.objects.exists()


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_non_admins_are_refused_the_teams_pages(client, research, role, viewer_user, operator_user):
    client.force_login(viewer_user if role == "viewer" else operator_user)

    assert client.get("/teams/").status_code == 403
    assert client.post("/teams/", {"name": "mine"}).status_code == 403
    assert client.post("/teams/research/members/", {"username": "otto"}).status_code == 403
    assert client.post("/teams/research/delete/").status_code == 403
    assert list(Team.objects.values_list("name", flat=True)) == ["research"]
    assert "/teams/" not in client.get("/keys/").content.decode()  # no nav link


def test_a_member_issues_a_key_for_their_team_on_the_keys_page(client, research, viewer_user):
    client.force_login(viewer_user)
    assert '<option value="research">research</option>' in client.get("/keys/").content.decode()

    response = client.post("/keys/", {"name": "lab", "scopes": ["inference"], "team": "research"})

    assert response.status_code == 200
    assert ApiKey.objects.get(name="lab").team == research
    assert "<td>research</td>" in response.content.decode()


def test_the_keys_page_offers_no_team_to_someone_in_none(client, research, operator_user):
    client.force_login(operator_user)
    assert 'name="team"' not in client.get("/keys/").content.decode()

    response = client.post("/keys/", {"name": "lab", "scopes": ["inference"], "team": "research"})

    assert response.status_code == 400
    assert "Select a valid choice." in response.content.decode()
    assert not ApiKey.objects.filter(name="lab").exists()
