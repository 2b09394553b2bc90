"""Calls to remote hosts: one pooled httpx.AsyncClient per host and event loop, per-phase timeouts,
retries within a deadline, and an optional circuit breaker consulted on every attempt.

    response = await http.request("POST", f"{engine.base_url}/chat/completions", json=body,
                                  headers={"Authorization": f"Bearer {engine.api_key}"},
                                  deadline=120, breaker=CircuitBreaker(target_id(engine.name)))

An httpx.AsyncClient belongs to the event loop it first ran on, so clients are kept per (loop, host).
Shutting down: Django's ASGI handler (and daphne) offer no lifespan event, so an `atexit` hook closes
the clients of loops still open at exit; code that runs its own loop (`asyncio.run` in a command or a
test) calls `await aclose_all()` before that loop ends, or its sockets are left to the garbage collector.
"""

import asyncio
import atexit
import contextlib
import time
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from .retry import UpstreamError, is_retriable, retrying

_clients = {}  # event loop → {origin: AsyncClient}


def timeouts(*, connect=None, read=None, write=None, pool=None):
    """httpx.Timeout from BLAZE_UPSTREAM_{CONNECT,READ,WRITE,POOL}_TIMEOUT, any phase overridden."""
    return httpx.Timeout(
        connect=settings.BLAZE_UPSTREAM_CONNECT_TIMEOUT if connect is None else connect,
        read=settings.BLAZE_UPSTREAM_READ_TIMEOUT if read is None else read,
        write=settings.BLAZE_UPSTREAM_WRITE_TIMEOUT if write is None else write,
        pool=settings.BLAZE_UPSTREAM_POOL_TIMEOUT if pool is None else pool,
    )


def _origin(url):
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def client_for(url):
    """The running loop's pooled client for the host of `url` (made on first use)."""
    loop = asyncio.get_running_loop()
    clients = _clients.get(loop)
    if clients is None:
        for closed in [other for other in _clients if other.is_closed()]:
            del _clients[closed]
        clients = _clients[loop] = {}
    origin = _origin(url)
    client = clients.get(origin)
    if client is None or client.is_closed:
        client = clients[origin] = httpx.AsyncClient(
            timeout=timeouts(),
            limits=httpx.Limits(
                max_connections=settings.BLAZE_UPSTREAM_MAX_CONNECTIONS,
                max_keepalive_connections=settings.BLAZE_UPSTREAM_MAX_KEEPALIVE,
                keepalive_expiry=settings.BLAZE_UPSTREAM_KEEPALIVE_SECONDS,
            ),
        )
    return client


async def aclose_all():
    """Close every pooled client of the running loop (the next request opens new ones)."""
    clients = _clients.pop(asyncio.get_running_loop(), {})
    await asyncio.gather(*(client.aclose() for client in clients.values()))


@atexit.register
def _close_at_exit():
    for loop, clients in list(_clients.items()):
        if not loop.is_closed() and not loop.is_running():
            # The process is ending: a connection that will not close politely is closed by the OS.
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*(client.aclose() for client in clients.values())))
    _clients.clear()


def _cut(timeout, left):
    return httpx.Timeout(
        connect=min(timeout.connect, left), read=min(timeout.read, left),
        write=min(timeout.write, left), pool=min(timeout.pool, left),
    )


async def request(method, url, *, deadline=None, timeout=None, stream=False, attempts=None, breaker=None,
                  **kwargs):
    """Send one request through the host's pooled client and return the httpx.Response.

    - 2xx-4xx are returned as they are (a 4xx is the caller's to relay, never retried);
      a 5xx raises UpstreamError; timeouts and connection errors raise httpx's exceptions.
    - Those failures are retried (see retry.retrying) within `deadline` seconds (default
      BLAZE_REQUEST_TIMEOUT_SECONDS), each attempt's phase timeouts (`timeout`, default `timeouts()`)
      cut to the time left, and the attempt as a whole bounded by it too.
    - `breaker`: every attempt asks it first (BreakerOpen ends the retries) and reports to it.
    - `stream=True`: returns once the headers arrive, the body unread; the caller reads it
      (`aiter_lines()`) and must `await response.aclose()`. Retries and the breaker see the headers
      only: a failure while reading the body is the caller's to handle.
    `kwargs` go to httpx.AsyncClient.build_request (json=, headers=, content=, params=).
    """
    deadline = settings.BLAZE_REQUEST_TIMEOUT_SECONDS if deadline is None else deadline
    timeout = timeout or timeouts()
    client = client_for(url)
    ends = time.monotonic() + deadline
    async for attempt in retrying(deadline=deadline, attempts=attempts):
        with attempt:
            left = max(ends - time.monotonic(), 0.001)
            sent = client.build_request(method, url, timeout=_cut(timeout, left), **kwargs)
            if breaker is None:
                return await _send(client, sent, stream, left)
            async with breaker.guard(is_failure=is_retriable):
                return await _send(client, sent, stream, left)


async def _send(client, sent, stream, left):
    try:
        # Phase timeouts restart on every chunk; this bounds the attempt as a whole.
        async with asyncio.timeout(left):
            response = await client.send(sent, stream=stream)
            if response.status_code >= 500:
                try:
                    body = (await response.aread()).decode(errors="replace")
                finally:
                    await response.aclose()
                raise UpstreamError(response.status_code, body)
    except TimeoutError as exc:
        raise httpx.ReadTimeout(f"No complete answer within {left:.1f} s.", request=sent) from exc
    return response
