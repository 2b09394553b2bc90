"""Fixtures for the serving tests, used by name."""

import pytest

from accounts import services
from accounts.audit import Actor
from tests.conftest import make_user


@pytest.fixture
def openai_client(live_blaze):
    """The official openai client pointed at the live server, with a viewer's `inference` key."""
    from openai import OpenAI

    user = make_user("app", "viewer")
    _, raw = services.api_key_create(actor=Actor.system("test"), user=user, name="app", scopes=["inference"])
    return OpenAI(base_url=f"{live_blaze}/v1", api_key=raw, max_retries=0, timeout=120)


from tests.engines.runtimes.conftest import tiny_diffusion_path, tiny_llm_path  # noqa: E402,F401  TEMP
