"""What /api/schema/ says besides the views' own parts (blaze_site/schema.py): every refusal an
operation can answer with, in the error shape, and request bodies without other properties."""

import pytest


@pytest.fixture
def schema(api, db):
    return api.get("/api/schema/?format=json").json()


def test_every_operation_documents_its_refusals(schema):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            expected = {"400", "401", "403", "413"} | ({"404"} if "{" in path else set())
            assert expected <= operation["responses"].keys(), f"{method.upper()} {path}"
            assert operation["responses"]["401"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"}


def test_a_429_is_documented_where_a_rate_limit_applies(schema):
    assert "429" in schema["paths"]["/api/engines/"]["get"]["responses"]
    assert "429" not in schema["paths"]["/api/ratelimits/"]["get"]["responses"]  # exempt: the way back


def test_a_request_body_takes_no_other_properties(schema):
    assert schema["components"]["schemas"]["RouteRequest"]["additionalProperties"] is False
    assert schema["paths"]["/api/routes/"]["post"]["requestBody"]["content"].keys() == {"application/json"}


def test_limit_and_offset_state_their_bounds(schema):
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/api/users/"]["get"]["parameters"]}
    assert (parameters["limit"]["minimum"], parameters["limit"]["maximum"]) == (1, 1000)
    assert (parameters["offset"]["minimum"], parameters["offset"]["maximum"]) == (0, 10**18)


def test_a_409_is_documented_where_a_value_may_be_taken(schema):
    paths = schema["paths"]
    assert "409" in paths["/api/engines/"]["post"]["responses"]
    assert "409" in paths["/api/routes/{name}/"]["patch"]["responses"]
    assert "409" in paths["/api/routes/{route_name}/targets/"]["post"]["responses"]
    assert "409" in paths["/api/users/"]["post"]["responses"]


def test_no_409_is_documented_where_nothing_can_be_taken(schema):
    paths = schema["paths"]
    assert "409" not in paths["/api/users/{id}/"]["patch"]["responses"]  # the username is fixed
    assert "409" not in paths["/api/security/blocks/"]["post"]["responses"]  # blocking again replaces
    assert "409" not in paths["/api/engines/{name}/enable/"]["post"]["responses"]
