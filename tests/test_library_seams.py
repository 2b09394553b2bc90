"""Where Blaze leans on a library's insides, a check that fails on the upgrade that would break it.

Each kept seam is named in docs/decisions.md with why it is kept; when one of these fails, read the
library's new code, adapt ours, then update the fingerprint or check here.
"""

import hashlib
import inspect

import redis.asyncio
import torch
from asgiref.sync import async_to_sync, markcoroutinefunction
from celery import Celery
from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline
from django.contrib.auth.models import Group
from django.core.handlers.asgi import ASGIHandler
from django.db.models import Prefetch, prefetch_related_objects
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import path
from django.utils.functional import cached_property
from drf_spectacular.generators import SchemaGenerator
from kombu import Queue
from kombu.common import Broadcast
from rest_framework import generics, serializers
from transformers import DynamicCache, GPT2Config, GPT2LMHeadModel
from transformers.cache_utils import DynamicLayer

from blaze_site.schema import AutoSchema
from core import shared_state
from core.serializers import StrictInput
from engines import contract
from engines.models import Route, RouteFallback, RouteTarget


def fingerprint(function):
    return hashlib.sha256(inspect.getsource(function).encode()).hexdigest()[:16]


def test_djangos_asgi_handle_is_the_one_blaze_site_asgi_apihandler_rewrites():
    # ApiHandler.handle is Django 5.2's ASGIHandler.handle less its two trips to the sync thread.
    assert fingerprint(ASGIHandler.handle) == "98faeb5bef800331", "Django's ASGIHandler.handle changed: redo ApiHandler"


def test_twisted_still_takes_the_argument_blaze_site_serve_sets_and_daphne_passes_it_on():
    from daphne.http_protocol import WebRequest
    from twisted.web import http

    assert "parsePOSTFormSubmission" in inspect.signature(http.Request.__init__).parameters
    assert "http.Request.__init__(self, *args, **kwargs)" in inspect.getsource(WebRequest.__init__)


def test_drf_still_builds_a_serializers_fields_where_the_v1_protocol_copies_them():
    # engines/openai/protocol.py: RequestSerializer overrides get_fields and drops the `fields` cache.
    assert isinstance(inspect.getattr_static(serializers.Serializer, "fields"), cached_property)
    assert fingerprint(serializers.Serializer.get_fields) == "42aab36390bd6a8e", "DRF's get_fields changed"


def test_the_hiredis_packer_writes_the_bytes_redis_pys_own_packer_writes():
    ours = shared_state.HiredisPackedConnection()
    theirs = redis.asyncio.Connection()
    for command in [("SET", "k", "v"), ("SCRIPT LOAD", "return 1"), (b"CLIENT SETNAME", b"x"),
                    ("EVALSHA", "abc", 1, "key", 2.5, b"\x00bytes"), ("XADD", "s", "*", "event", "é")]:
        assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command)), command


def test_redis_pys_pipelines_count_queued_commands_as_shared_state_parts_reads_them():
    # Parts names a batch's replies by the pipeline's length before and after each part is queued.
    for pipe in (redis.Redis().pipeline(transaction=False), redis.asyncio.Redis().pipeline(transaction=False)):
        parts = shared_state.Parts()
        pipe.get("a")
        with parts.named("part", pipe):
            pipe.set("b", 1)
            pipe.evalsha("0" * 40, 1, "key")  # as shared_state.Script.queue does
        assert parts.split(["a", "b", "script"]) == {"part": ["b", "script"]}


def test_djangos_prefetch_fills_the_cache_the_router_and_route_fallbacks_look_in():
    # engines/serving/router/pick.py and Route.fallback_names ask `_prefetched_objects_cache` whether a
    # relation came with the route; engines/services.py pops "fallbacks" from it after replacing them.
    # Django has no public "was this prefetched". No query may run here: pytest-django would refuse it.
    route = Route(pk=1, name="r")
    prefetch_related_objects([route], Prefetch("targets", queryset=RouteTarget.objects.select_related("engine").none()),
                             Prefetch("fallbacks", queryset=RouteFallback.objects.none()))
    assert set(route._prefetched_objects_cache) == {"targets", "fallbacks"}
    assert route.targets.all() is route._prefetched_objects_cache["targets"]
    route._prefetched_objects_cache.pop("fallbacks")
    assert route.fallbacks.all()._result_cache is None  # read from the database again, when evaluated


def test_celerys_select_add_adds_a_queue_the_workers_task_consumer_consumes():
    # engines/worker/tasks.py adds each worker's own queue at celeryd_after_setup, as Celery's
    # documentation of that signal shows; the consumer starts after the signal.
    app = Celery(set_as_current=False)
    app.conf.task_queues = (Queue(contract.SHARED_QUEUE), Broadcast(contract.CONTROL_QUEUE))
    app.amqp.queues.select_add(contract.worker_queue("w1@host"))
    with app.connection_for_read("memory://") as connection:
        consumer = app.amqp.TaskConsumer(connection.default_channel)
        assert contract.worker_queue("w1@host") in {queue.name for queue in consumer.queues}
        assert contract.SHARED_QUEUE in {queue.name for queue in consumer.queues}


class _StrictGroup(StrictInput, serializers.ModelSerializer):
    class Meta:
        model = Group
        fields = ["name"]  # unique: DRF gives it a UniqueValidator


class _GroupCreate(generics.CreateAPIView):
    serializer_class = _StrictGroup
    queryset = Group.objects.none()
    schema = AutoSchema()


def test_drf_spectacular_still_maps_bodies_through_the_methods_blaze_site_schema_overrides():
    # AutoSchema overrides _map_basic_serializer (a strict body takes no other properties) and
    # _get_response_bodies (a 409 where a value may be taken): spectacular's public hooks see neither
    # the serializer nor the operation.
    schema = SchemaGenerator(patterns=[path("groups/", _GroupCreate.as_view())]).get_schema(request=None, public=True)
    assert schema["components"]["schemas"]["_StrictGroupRequest"]["additionalProperties"] is False
    assert "409" in schema["paths"]["/groups/"]["post"]["responses"]


class _Marker:
    """A middleware answering every request itself: proof that a chain loaded with it serves."""

    sync_capable, async_capable = False, True

    def __init__(self, get_response):
        markcoroutinefunction(self)

    async def __call__(self, request):
        return HttpResponse("the chain loaded")


def test_djangos_handler_keeps_the_middleware_chain_settings_named_when_it_was_built(settings):
    # blaze_site/asgi.py's ApiHandler sets settings.MIDDLEWARE to API_MIDDLEWARE only while Django
    # builds its chain (load_middleware, at construction): there is no argument for another chain.
    settings.MIDDLEWARE = [f"{__name__}._Marker"]
    handler = ASGIHandler()
    settings.MIDDLEWARE = []
    response = async_to_sync(handler.get_response_async)(RequestFactory().get("/"))
    assert response.content == b"the chain loaded"


def test_diffusers_pipelines_stop_denoising_when_a_callback_sets_interrupt():
    # engines/worker/runtimes/diffusion.py sets pipe._interrupt in callback_on_step_end, as diffusers'
    # documentation ("interrupt the diffusion process") shows: no public setter. The pipelines
    # AutoPipeline picks for Stable Diffusion must read it in their loop and reset it on each call.
    for pipeline in (StableDiffusionPipeline, StableDiffusionImg2ImgPipeline):
        pipe = object.__new__(pipeline)
        pipe._interrupt = True
        assert pipe.interrupt is True
        source = inspect.getsource(pipeline.__call__)
        assert "self._interrupt = False" in source and "if self.interrupt:" in source, pipeline


def test_a_dynamic_cache_layers_keys_and_values_replaced_in_place_are_what_the_model_reads():
    # engines/worker/runtimes/decoding.py drops, stacks and reorders a running batch's columns by assigning
    # each DynamicLayer's keys and values: transformers' Cache has no API to drop columns or join caches.
    model = GPT2LMHeadModel(GPT2Config(vocab_size=16, n_positions=8, n_embd=8, n_layer=1, n_head=2)).eval()
    with torch.inference_mode():
        plain = DynamicCache(config=model.config)
        model(input_ids=torch.tensor([[1, 2]]), cache=plain, use_cache=True)
        expected = model(input_ids=torch.tensor([[3]]), cache=plain, use_cache=True).logits

        padded = DynamicCache(config=model.config)  # [pad, 1, 2], the pad masked out, as a left-aligned row
        model(input_ids=torch.tensor([[9, 1, 2]]), attention_mask=torch.tensor([[0, 1, 1]]),
              position_ids=torch.tensor([[0, 0, 1]]), cache=padded, use_cache=True)
        [layer] = padded.layers
        assert type(layer) is DynamicLayer
        layer.keys, layer.values = layer.keys[:, :, 1:], layer.values[:, :, 1:]  # as Decoder.keep drops it
        assert padded.get_seq_length() == 2
        logits = model(input_ids=torch.tensor([[3]]), attention_mask=torch.tensor([[1, 1, 1]]),
                       position_ids=torch.tensor([[2]]), cache=padded, use_cache=True).logits
    torch.testing.assert_close(logits, expected)
