"""`python -m blaze_site.serve [daphne's arguments]`: daphne as Blaze runs it (`./blaze up`, the tests,
the benches). Three things differ from `daphne` itself (figures: docs/benchmarks.md, decisions:
docs/decisions.md):

- Twisted's reactor runs on a uvloop loop. Daphne makes a standard-library asyncio loop when
  `daphne.server` is imported, unless an asyncio reactor is installed already: this installs one
  first. Twisted's sockets, the aiohttp upstream client and the Redis client all run on it.
- Twisted does not parse POSTed form bodies into `request.args` (its public `parsePOSTFormSubmission`
  argument). Daphne never reads them: it hands the body to Django, which parses it again; Twisted's
  parse makes garbage only the collector's full passes free, and reads a multipart upload twice.
- Once the reactor runs, the URLconf (and with it every view module) is loaded, a full collection
  run, and everything left frozen (`gc.freeze`): the collector's passes no longer walk the loaded
  code, passes that held the loop, and every request in flight, under load.

tests/test_library_seams.py fails on a daphne or Twisted upgrade that would break the second.
"""

import asyncio
import gc
from functools import partialmethod

import uvloop
from twisted.internet import asyncioreactor

loop = uvloop.new_event_loop()
asyncio.set_event_loop(loop)  # daphne asks asyncio.get_event_loop() for the reactor's loop
asyncioreactor.install(loop)

# After the reactor is installed:
from daphne.cli import CommandLineInterface  # noqa: E402
from daphne.http_protocol import WebRequest  # noqa: E402
from twisted.internet import reactor  # noqa: E402

WebRequest.__init__ = partialmethod(WebRequest.__init__, parsePOSTFormSubmission=False)


def freeze_loaded_code():
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports every view module now, not on the first request
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    reactor.callWhenRunning(freeze_loaded_code)
    CommandLineInterface.entrypoint()
