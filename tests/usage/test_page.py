"""The Usage page and its CSV: an admin sees everyone's usage by name, anyone else only their own; a
filter it does not know is named, not ignored."""

import csv
import io

import pytest

from tests.conftest import PASSWORD, make_user
from tests.usage.test_persist import chat
from usage import persist


@pytest.fixture
def signed_in(client):
    def sign_in(user):
        assert client.login(username=user.username, password=PASSWORD)
        return client
    return sign_in


def test_an_admin_sees_everyone_by_name_and_a_viewer_only_themselves(stream, signed_in):
    admin, viewer = make_user("page-admin", "admin"), make_user("page-viewer", "viewer")
    chat("page-1", user_id=admin.pk, completion=30)
    chat("page-2", user_id=viewer.pk, completion=5)
    persist.drain()

    page = signed_in(admin).get("/usage/", {"group_by": "user"}).content.decode()
    assert "page-admin" in page and "page-viewer" in page and "Every user" in page
    signed_in(viewer)
    own = signed_in(viewer).get("/usage/", {"group_by": "user"}).content.decode()
    assert "page-viewer" in own and "page-admin" not in own and "Your requests" in own

    export = signed_in(viewer).get("/usage/export.csv", {"group_by": "user", "period": "hour"})
    rows = list(csv.reader(io.StringIO(export.content.decode())))
    assert export["Content-Type"] == "text/csv"
    assert rows[0][:4] == ["start", "user", "currency", "requests"]
    assert [(row[1], row[3]) for row in rows[1:]] == [("page-viewer", "1")]


def test_a_filter_the_page_does_not_know_is_named(db, signed_in):
    response = signed_in(make_user("page-odd", "viewer")).get("/usage/", {"group_by": "colour", "days": "3"})
    assert response.status_code == 400
    page = response.content.decode()
    assert "&#x27;colour&#x27; is not one of" in page and "Pick one of 1, 7, 30, 90 days." in page
    csv_client = signed_in(make_user("page-odd-csv", "viewer"))
    assert csv_client.get("/usage/export.csv", {"period": "week"}).status_code == 400
