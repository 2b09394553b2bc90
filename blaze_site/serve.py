"""`python -m blaze_site.serve [daphne's arguments]`: daphne as Blaze runs it (`./blaze up`, the tests,
the benches). Four things differ from `daphne` itself, each measured on `bench/router.py`'s path:

- Twisted's reactor runs on a uvloop loop. Daphne makes a standard-library asyncio loop when
  `daphne.server` is imported, unless an asyncio reactor is installed already: this installs one
  first. Twisted's sockets, the aiohttp upstream client and the Redis client all run on it (about 5%
  less CPU per `/v1` request).
- Twisted does not parse POSTed form bodies into `request.args`. Daphne never reads them: it hands
  the body to Django, which parses it again. Twisted's parse of the Content-Type makes two new classes
  per POST (`email.headerregistry`), garbage that only the collector's full passes free, and it would
  read a whole multipart upload into memory a second time.
- Twisted does not format its own access log line for each request. Daphne writes one (its access
  log, as before); Twisted's went to Twisted's log, which daphne sends nowhere (or, at verbosity 2 and
  up, to Python's logging, a second line for the same request). About 50 µs a request.
- Once the reactor runs, the URLconf (and with it every view module) is loaded, a full collection
  run, and everything left frozen (`gc.freeze`): the collector's passes no longer walk the 165,000
  or so objects of the loaded code on every full pass. Those passes held the loop for about 100 ms every
  few hundred requests under load; the p99 latency at 32 clients fell from about 200 to 70 ms.
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
from daphne.http_protocol import HTTPFactory, WebRequest  # noqa: E402
from twisted.internet import reactor  # noqa: E402

WebRequest.__init__ = partialmethod(WebRequest.__init__, parsePOSTFormSubmission=False)
HTTPFactory.log = lambda self, request: None  # Twisted's line; daphne's access log is written elsewhere


def freeze_loaded_code():
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports every view module now, not on the first request
    gc.collect()
    gc.freeze()


if __name__ == "__main__":
    reactor.callWhenRunning(freeze_loaded_code)
    CommandLineInterface.entrypoint()
