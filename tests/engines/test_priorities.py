"""Where a request's priority comes from: its API key (else its owner's role), lowered by the request's
own `priority`, never raised above it. (How priorities order admission: tests/engines/test_scheduler.py.)"""

import httpx
import pytest

from accounts import services
from accounts.audit import Actor
from core import errors
from engines.models import Engine
from engines.openai.protocol import ChatCompletionSerializer
from tests.conftest import make_user

ENGINE = Engine(name="tiny", kind="llm", config={"max_new_tokens": 64})


def validated(body, allowed):
    serializer = ChatCompletionSerializer(data={"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                                                **body}, context={"engine": ENGINE, "priority": allowed})
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data["payload"]["priority"]


def test_a_request_gets_its_callers_priority_or_asks_for_less():
    assert validated({}, allowed=6) == 6
    assert validated({"priority": 2}, allowed=6) == 2
    with pytest.raises(Exception) as refused:
        validated({"priority": 7}, allowed=6)
    assert "priority" in refused.value.detail and "at most 6" in str(refused.value.detail["priority"][0])


@pytest.mark.django_db
def test_only_an_admin_gives_a_key_more_than_its_owners_role(settings):
    viewer, admin = make_user("vera", "viewer"), make_user("adam", "admin")
    assert viewer.priority == settings.BLAZE_ROLE_PRIORITY["viewer"]
    with pytest.raises(errors.InvalidInput) as refused:
        services.api_key_create(actor=Actor(user=viewer), user=viewer, name="greedy", scopes=["inference"], priority=9)
    assert refused.value.field == "priority"
    low, _ = services.api_key_create(actor=Actor(user=viewer), user=viewer, name="batch", scopes=["inference"],
                                     priority=1)
    urgent, _ = services.api_key_create(actor=Actor(user=admin), user=admin, name="urgent", scopes=["inference"],
                                        priority=9)
    unset, _ = services.api_key_create(actor=Actor(user=viewer), user=viewer, name="plain", scopes=["inference"])
    assert (low.effective_priority, urgent.effective_priority, unset.effective_priority) == (1, 9, viewer.priority)


@pytest.mark.django_db(transaction=True)
def test_v1_refuses_a_priority_above_the_keys_naming_the_field(live_blaze, tiny_llm_path):
    Engine.objects.create(name="tiny", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 64})
    owner = make_user("app-owner", "viewer")
    _, raw = services.api_key_create(actor=Actor.system("test"), user=owner, name="low", scopes=["inference"],
                                     priority=2)
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "priority": 3}
    response = httpx.post(f"{live_blaze}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "priority" and "at most 2" in response.json()["error"]["message"]
