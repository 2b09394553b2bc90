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


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    # PBKDF2 costs half a second a hash; these tests sign in dozens of times.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
