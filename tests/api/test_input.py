"""What the native API takes (core/serializers.py, core/pagination.py): JSON bodies whose
values have the schema's types, no unknown fields, and limit/offset that are whole numbers in range."""

import pytest


@pytest.fixture
def operator(operator_user, client_for):
    return client_for(operator_user)


@pytest.mark.parametrize("field, value, message", [
    ("sticky_ttl_seconds", "60", "Expected a whole number."),
    ("keep_prompts", 1, "Expected true or false."),
    ("description", 5, "Expected a string."),
])
def test_a_value_of_the_wrong_json_type_is_a_400_naming_the_field(operator, field, value, message):
    response = operator.post("/api/routes/", {"name": "chat", field: value}, format="json")
    assert response.status_code == 400
    assert response.json()["fields"] == {field: [message]}


def test_each_item_of_a_list_has_its_type_too(admin_user, client_for):
    response = client_for(admin_user).post("/api/keys/", {"name": "app", "scopes": ["read", 1]}, format="json")
    assert response.status_code == 400 and list(response.json()["fields"]) == ["scopes"]


def test_an_unknown_field_is_a_400(operator):
    response = operator.post("/api/routes/", {"name": "chat", "colour": "red"}, format="json")
    assert response.status_code == 400 and response.json()["fields"] == {"colour": ["Unknown field."]}


def test_a_form_body_is_refused_with_415(operator):
    assert operator.post("/api/routes/", {"name": "chat"}).status_code == 415  # the test client's multipart


@pytest.mark.parametrize("query", ["limit=abc", "limit=0", "offset=-1", "offset=null", "limit=²"])
def test_a_limit_or_offset_that_is_not_a_whole_number_in_range_is_a_400(operator, query):
    response = operator.get(f"/api/routes/?{query}")
    assert response.status_code == 400 and list(response.json()["fields"]) == [query.partition("=")[0]]


@pytest.mark.parametrize("query", ["limit=1001", "limit=124798424026931494912", "offset=1000000000000000001",
                                   f"offset={'9' * 5000}"])
def test_a_limit_or_offset_beyond_its_maximum_is_a_400_naming_it(admin_user, client_for, query):
    response = client_for(admin_user).get(f"/api/users/?{query}")
    assert response.status_code == 400 and list(response.json()["fields"]) == [query.partition("=")[0]]


def test_the_largest_limit_and_offset_are_answered(operator):
    body = operator.get("/api/routes/?limit=1000&offset=1000000000000000000").json()
    assert (body["count"], body["results"]) == (0, [])


def test_limit_and_offset_page_as_before(operator):
    for name in ("a", "b", "c"):
        operator.post("/api/routes/", {"name": name}, format="json")
    body = operator.get("/api/routes/?limit=1&offset=1").json()
    assert (body["count"], [route["name"] for route in body["results"]]) == (3, ["b"])
