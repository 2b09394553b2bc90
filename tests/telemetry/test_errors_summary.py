"""/errors/summary: recent error responses grouped by type and route, for admins."""


def test_errors_are_grouped_by_type_and_route(client_for, admin_user):
    client = client_for(admin_user)
    for _ in range(2):
        client.get("/api/engines/31337/")
    client.post("/api/engines/", {"name": ""}, format="json")
    groups = client.get("/errors/summary").json()["groups"]
    by_key = {(g["endpoint"], g["status"]): g for g in groups}
    assert by_key[("/api/engines/<name>/", 404)]["count"] == 2
    assert by_key[("/api/engines/", 400)]["count"] == 1
    assert by_key[("/api/engines/<name>/", 404)]["last_request_id"]


def test_only_admins_read_the_summary(client_for, operator_user):
    assert client_for(operator_user).get("/errors/summary").status_code == 403


def test_since_must_be_a_sensible_number(client_for, admin_user):
    response = client_for(admin_user).get("/errors/summary?since=forever")
    assert response.status_code == 400 and "since" in response.json()["fields"]
