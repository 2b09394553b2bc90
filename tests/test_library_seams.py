"""Where Blaze leans on a library's insides, a check that fails on the upgrade that would break it.

Each kept seam is named in docs/decisions.md with why it is kept; when one of these fails, read the
library's new code, adapt ours, then update the fingerprint here.
"""

import hashlib
import inspect

import redis.asyncio
from django.core.handlers.asgi import ASGIHandler
from django.utils.functional import cached_property
from rest_framework import serializers

from blaze_site import shared_state


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
