"""What validating an OpenAI request leaves behind."""

import gc

from engines.models import Engine
from engines.openai.protocol import ChatCompletionSerializer


def test_a_validated_request_leaves_nothing_for_the_garbage_collector():
    """Bound fields point back at their serializer; kept after validation, every request would leave
    a cycle of them that only the collector's passes free (each pass a pause for every request in
    flight). (A refused one still does: DRF re-raises its ValidationError from the frame that caught
    it, a cycle of its own, on the path of bad requests only.)"""
    engine = Engine(name="far", kind="llm", backend="remote", base_url="http://127.0.0.1:9/v1")
    body = {"model": "far", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8}
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection frees is kept in gc.garbage, to be looked at
    try:
        for _ in range(3):
            serializer = ChatCompletionSerializer(data=body, context={"engine": engine})
            assert serializer.is_valid() and serializer.validated_data["payload"]["max_tokens"] == 8
        del serializer
        gc.collect()
        left = [o for o in gc.garbage if isinstance(o, ChatCompletionSerializer)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert left == []
