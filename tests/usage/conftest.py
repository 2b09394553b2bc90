import pytest


@pytest.fixture
def stream(own_redis_prefix, db):
    """Only this test's usage events are in the stream."""
