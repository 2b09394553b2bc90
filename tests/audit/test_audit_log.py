"""The audit log: append-only however it is approached, filterable, exportable, paginated."""

import csv
import io
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction

from accounts.audit import Actor, record
from accounts.csv_export import COLUMNS
from accounts.models import AuditEvent

on_postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="the DELETE trigger is PostgreSQL's")


def event(action="engine.update", actor="alice", target="tiny", **fields):
    return AuditEvent.objects.create(action=action, actor=actor, target=target, **fields)


def at(day):
    return datetime(2024, 6, day, 12, tzinfo=UTC)


@pytest.fixture
def admin(admin_user, client_for):
    return client_for(admin_user)


@pytest.fixture
def admin_page(client, admin_user):
    client.force_login(admin_user)
    return client


def csv_rows(response):
    assert response["Content-Type"] == "text/csv"
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


# Append-only

def test_saved_event_cannot_be_saved_again(db):
    saved = record(actor=Actor.system(), action="engine.update", target_repr="tiny")
    saved.action = "engine.forged"
    with pytest.raises(PermissionError):
        saved.save()
    assert AuditEvent.objects.get().action == "engine.update"


def test_event_cannot_be_deleted(db):
    saved = record(actor=Actor.system(), action="engine.update")
    with pytest.raises(PermissionError):
        saved.delete()
    assert AuditEvent.objects.count() == 1


def test_queryset_update_and_delete_are_refused(db):
    record(actor=Actor.system(), action="engine.update")
    with pytest.raises(PermissionError):
        AuditEvent.objects.update(action="engine.forged")
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(action="engine.update").delete()
    assert AuditEvent.objects.get().action == "engine.update"


def test_raw_sql_update_is_refused_by_the_database(db):
    record(actor=Actor.system(), action="engine.update")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("UPDATE accounts_auditevent SET action = %s", ["engine.forged"])
    assert AuditEvent.objects.get().action == "engine.update"


@on_postgresql_only
def test_raw_sql_delete_is_refused_by_postgresql(db):
    record(actor=Actor.system(), action="engine.update")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM accounts_auditevent")
    assert AuditEvent.objects.count() == 1


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_api_has_no_way_to_change_the_log(admin, method):
    event()
    assert getattr(admin, method)("/api/audit/", {}, format="json").status_code == 405
    assert AuditEvent.objects.get().action == "engine.update"


def test_api_has_no_url_for_a_single_event(admin):
    saved = event()
    assert admin.get(f"/api/audit/{saved.pk}/").status_code == 404
    assert admin.delete(f"/api/audit/{saved.pk}/").status_code == 404


# API filters

def actions(response):
    assert response.status_code == 200
    return sorted(item["action"] for item in response.json()["results"])


def test_action_filter_is_a_dotted_prefix_or_exact(admin):
    event("engine.create"), event("engine.update"), event("apikey.create"), event("engines.other")
    assert actions(admin.get("/api/audit/?action=engine")) == ["engine.create", "engine.update"]
    assert actions(admin.get("/api/audit/?action=engine.update")) == ["engine.update"]


def test_actor_filter(admin):
    event(actor="alice"), event(actor="bob", action="engine.delete")
    assert actions(admin.get("/api/audit/?actor=bob")) == ["engine.delete"]


def test_since_and_until_filter_by_time(admin):
    event("engine.create", time=at(1)), event("engine.update", time=at(10)), event("engine.delete", time=at(20))
    response = admin.get("/api/audit/", {"since": "2024-06-05T00:00:00Z", "until": "2024-06-15T00:00:00Z"})
    assert actions(response) == ["engine.update"]
    assert actions(admin.get("/api/audit/", {"since": "2024-06-05T00:00:00Z"})) == ["engine.delete", "engine.update"]


def test_bad_since_is_a_400_naming_it(admin):
    response = admin.get("/api/audit/?since=yesterday")
    assert response.status_code == 400
    assert "since" in response.json()["fields"]


def test_list_shows_newest_first_with_who_and_what(admin):
    event("engine.create", time=at(1)), event("engine.update", time=at(2), ip="203.0.113.7", changes={"weight": [1, 3]})
    newest = admin.get("/api/audit/").json()["results"][0]
    assert (newest["action"], newest["actor"], newest["ip"], newest["changes"]) == (
        "engine.update", "alice", "203.0.113.7", {"weight": [1, 3]})


@pytest.mark.parametrize("role", ["operator_user", "viewer_user"])
def test_non_admins_cannot_read_the_log(request, client_for, role):
    client = client_for(request.getfixturevalue(role))
    event()
    assert client.get("/api/audit/").status_code == 403


def test_non_admins_are_refused_before_the_filters_are_read(client_for, viewer_user):
    response = client_for(viewer_user).get("/api/audit/", {"since": "2024-06-15T00:00:00Z", "until": "2024-06-05"})
    assert response.status_code == 403


# CSV export

def test_api_csv_export_has_a_header_and_a_row_per_filtered_event(admin):
    event("engine.create"), event("engine.update", changes={"weight": [1, 3]}), event("apikey.create")
    rows = csv_rows(admin.get("/api/audit/?export=csv&action=engine"))
    assert rows[0] == COLUMNS
    assert sorted(row[COLUMNS.index("action")] for row in rows[1:]) == ["engine.create", "engine.update"]


def test_limit_and_offset_page_the_csv_export(admin):
    event("engine.create"), event("engine.update"), event("apikey.create")
    rows = csv_rows(admin.get("/api/audit/?export=csv&limit=1&offset=1"))
    assert [row[COLUMNS.index("action")] for row in rows[1:]] == ["engine.update"]


def test_a_bad_limit_is_refused_by_the_csv_export_too(admin):
    response = admin.get("/api/audit/?export=csv&limit=false")
    assert response.status_code == 400 and list(response.json()["fields"]) == ["limit"]


def test_csv_neutralises_spreadsheet_formulas(admin):
    event(target='=HYPERLINK("http://evil.example","click")', actor="+alice")
    [_, row] = csv_rows(admin.get("/api/audit/?export=csv"))
    assert row[COLUMNS.index("target")] == '\'=HYPERLINK("http://evil.example","click")'
    assert row[COLUMNS.index("actor")] == "'+alice"


def test_page_csv_export_applies_the_filters(admin_page):
    event("engine.create", actor="alice"), event("engine.update", actor="bob")
    rows = csv_rows(admin_page.get("/audit/?export=csv&actor=bob"))
    assert rows[0] == COLUMNS
    assert [row[COLUMNS.index("action")] for row in rows[1:]] == ["engine.update"]


def test_csv_export_is_for_admins_only(client_for, operator_user):
    event()
    assert client_for(operator_user).get("/api/audit/?export=csv").status_code == 403


# The page

def test_page_paginates_at_fifty(admin_page):
    for number in range(120):
        record(actor=Actor.system(), action="test.event", target_repr=f"t{number}")
    first = admin_page.get("/audit/")
    assert first.content.decode().count("<code>test.event</code>") == 50
    assert "Page 1 of 3" in first.content.decode()
    assert admin_page.get("/audit/?page=3").content.decode().count("<code>test.event</code>") == 20


def test_page_shows_and_applies_filters(admin_page):
    event("engine.create", target="first"), event("engine.update", target="second")
    page = admin_page.get("/audit/?action=engine.update").content.decode()
    for name in ("actor", "action", "target", "since", "until"):
        assert f'name="{name}"' in page
    assert "second" in page and "first" not in page


def test_page_says_when_a_filter_is_bad_and_keeps_the_good_ones(admin_page):
    event("engine.create", target="first"), event("engine.update", target="second")
    page = admin_page.get("/audit/?since=yesterday&action=engine.update").content.decode()
    assert "Enter a valid date/time." in page
    assert "second" in page and "first" not in page


def test_page_is_for_admins_only(client, operator_user):
    client.force_login(operator_user)
    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/?export=csv").status_code == 403
