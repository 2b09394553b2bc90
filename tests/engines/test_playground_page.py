"""The playground page itself: with no model of a mode's kind it says so and loads nothing to drive."""

import pytest

from engines.models import Engine

pytestmark = pytest.mark.django_db


def test_a_mode_without_a_model_says_who_can_register_one_and_loads_no_script(client, viewer_user, operator_user):
    Engine.objects.create(name="chat", kind="llm", model="tiny-llm")
    client.force_login(viewer_user)
    page = client.get("/playground/?mode=images").content.decode()
    assert "No diffusion engine or route you may use is enabled. Ask an operator to register one." in page
    assert "playground_images.js" not in page and "socket-state" not in page

    client.force_login(operator_user)
    assert 'href="/engines/new/">Register one</a>' in client.get("/playground/?mode=embed").content.decode()
    chat = client.get("/playground/?mode=chat").content.decode()
    assert "playground_chat.js" in chat and "socket-state" in chat
