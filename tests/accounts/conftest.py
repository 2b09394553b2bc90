"""Fixtures for the accounts tests, used by name."""

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def bearer():
    """bearer(token) → an APIClient that sends `Authorization: Bearer <token>` (an API key or a JWT)."""

    def build(token):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        return client

    return build
