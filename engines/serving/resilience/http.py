"""Calls to remote hosts: one pooled aiohttp.ClientSession per host and event loop, per-phase timeouts,
retries within a deadline, and an optional circuit breaker consulted on every attempt.

    response = await http.request("POST", f"{engine.base_url}/chat/completions", json=body,
                                  headers={"Authorization": f"Bearer {engine.api_key}"},
                                  deadline=120, breaker=CircuitBreaker(resilience_id(engine.name)))
    response.status, response.headers["Content-Type"], await response.read()

aiohttp rather than httpx: httpx's pool (httpcore) scans every pooled connection, polling each socket,
whenever a request starts or ends, several times the CPU per relayed request (docs/decisions.md).

A session belongs to the event loop it was made on, so sessions are kept per (loop, host).
Shutting down: Django's ASGI handler (and daphne) offer no lifespan event, so an `atexit` hook closes
the sessions of loops still open at exit; code that runs its own loop (`asyncio.run` in a command or a
test) calls `await aclose_all()` before that loop ends, or its sockets are left to the garbage collector.
"""

import asyncio
import atexit
import contextlib
import json as jsonlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings

from core.retry import MIN_ATTEMPT_SECONDS, UpstreamError, UpstreamTimeout, UpstreamUnreachable, is_retriable, retrying

if TYPE_CHECKING:
    from engines.serving.resilience.breaker import CircuitBreaker, Permit
    from engines.serving.resilience.outbound import OutboundLimit, Slot

Form = tuple[Mapping[str, Any], Mapping[str, tuple[str, bytes, str]]]  # (fields, {name: (filename, bytes, type)})

_sessions: dict[asyncio.AbstractEventLoop, dict[str, aiohttp.ClientSession]] = {}  # event loop → {origin: session}


def timeouts(*, connect: float | None = None, read: float | None = None,
             pool: float | None = None) -> aiohttp.ClientTimeout:
    """aiohttp.ClientTimeout from BLAZE_UPSTREAM_{CONNECT,READ,POOL}_TIMEOUT, any phase overridden:
    `connect` to open a connection, `read` between two reads of the answer, `pool` to wait for a free
    pooled connection (plus `connect` when a new one is opened). Sending the request is bounded by
    the attempt's share of the deadline."""
    connect = settings.BLAZE_UPSTREAM_CONNECT_TIMEOUT if connect is None else connect
    pool = settings.BLAZE_UPSTREAM_POOL_TIMEOUT if pool is None else pool
    return aiohttp.ClientTimeout(
        total=None, connect=pool + connect, sock_connect=connect,
        sock_read=settings.BLAZE_UPSTREAM_READ_TIMEOUT if read is None else read,
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def client_for(url: str) -> aiohttp.ClientSession:
    """The running loop's pooled session for the host of `url` (made on first use)."""
    loop = asyncio.get_running_loop()
    sessions = _sessions.get(loop)
    if sessions is None:
        for closed in [other for other in _sessions if other.is_closed()]:
            del _sessions[closed]
        sessions = _sessions[loop] = {}
    origin = _origin(url)
    session = sessions.get(origin)
    if session is None or session.closed:
        session = sessions[origin] = aiohttp.ClientSession(
            timeout=timeouts(),
            connector=aiohttp.TCPConnector(
                limit=settings.BLAZE_UPSTREAM_MAX_CONNECTIONS,
                keepalive_timeout=settings.BLAZE_UPSTREAM_KEEPALIVE_SECONDS,
            ),
        )
    return session


async def aclose_all() -> None:
    """Close every pooled session of the running loop (the next request opens new ones)."""
    sessions = _sessions.pop(asyncio.get_running_loop(), {})
    await asyncio.gather(*(session.close() for session in sessions.values()))


@atexit.register
def _close_at_exit() -> None:
    for loop, sessions in list(_sessions.items()):
        if not loop.is_closed() and not loop.is_running():
            # The process is ending: a connection that will not close politely is closed by the OS.
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*(session.close() for session in sessions.values())))
    _sessions.clear()


def _cut(timeout: aiohttp.ClientTimeout, left: float) -> aiohttp.ClientTimeout:
    # Every phase is set, as timeouts() sets them.
    assert timeout.connect is not None and timeout.sock_connect is not None and timeout.sock_read is not None
    return aiohttp.ClientTimeout(
        total=None, connect=min(timeout.connect, left), sock_connect=min(timeout.sock_connect, left),
        sock_read=min(timeout.sock_read, left),
    )


async def request(method: str, url: str, *, deadline: float | None = None, timeout: aiohttp.ClientTimeout | None = None,
                  stream: bool = False, attempts: int | None = None, breaker: "CircuitBreaker | None" = None,
                  permit: "Permit | None" = None, limit: "OutboundLimit | None" = None, patience: float | None = None,
                  json: Any = None, form: Form | None = None,
                  headers: Mapping[str, str] | None = None) -> aiohttp.ClientResponse:
    """Send one request through the host's pooled session and return the aiohttp.ClientResponse.

    - 2xx-4xx are returned as they are (a 4xx is the caller's to relay, never retried), the body read
      (`await response.read()` hands it out); a 5xx raises UpstreamError; a timeout raises
      UpstreamTimeout; a refused, reset or dropped connection raises UpstreamUnreachable.
    - Those failures are retried (see retry.retrying) within `deadline` seconds (default
      BLAZE_REQUEST_TIMEOUT_SECONDS), each attempt's phase timeouts (`timeout`, default `timeouts()`)
      cut to the time left, and the attempt as a whole bounded by it too.
    - `breaker`: every attempt asks it first (BreakerOpen ends the retries) and reports to it; the
      first one goes on `permit` instead when the caller has been granted one already.
    - `limit`: the host's outbound caps (`outbound.OutboundLimit`): the request holds one of its
      concurrency slots from before the first attempt until the answer is read (a stream's: until it
      is released or closed), and each attempt waits for its turn under the rate; waits last at most
      `patience` seconds in all (default: the deadline, less an attempt's minimum), after which
      errors.Overloaded is raised (the breaker's `permit`, unused then, is given back).
    - `stream=True`: returns once the headers arrive, the body unread; the caller reads it
      (`response.content`) and must `release()` it (or `close()` it when broken off). Retries and the
      breaker see the headers only: a failure while reading the body is the caller's to handle.
    - `json`: the body as JSON; `form`: (fields, files) sent as multipart/form-data, files as
      {name: (filename, bytes, content type)}.
    """
    response, owed = await request_owing(method, url, deadline=deadline, timeout=timeout, stream=stream,
                                         attempts=attempts, breaker=breaker, permit=permit, limit=limit,
                                         patience=patience, json=json, form=form, headers=headers)
    if owed is not None:
        assert breaker is not None  # only a breaker's permit is owed
        await breaker.arecord_success(owed)
    return response


async def request_owing(method: str, url: str, *, deadline: float | None = None,
                        timeout: aiohttp.ClientTimeout | None = None, stream: bool = False, attempts: int | None = None,
                        breaker: "CircuitBreaker | None" = None, permit: "Permit | None" = None,
                        limit: "OutboundLimit | None" = None, patience: float | None = None, json: Any = None,
                        form: Form | None = None,
                        headers: Mapping[str, str] | None = None) -> "tuple[aiohttp.ClientResponse, Permit | None]":
    """request(), except that a first try made on the caller's `permit` and answered is not recorded
    here: returns (response, `permit` then, else None), and the caller owes the breaker that success.
    It can then record it with its other counts, one round trip fewer; a stream's, once the stream has
    been read. Failures, and every retry, are recorded here as in request()."""
    deadline = settings.BLAZE_REQUEST_TIMEOUT_SECONDS if deadline is None else deadline
    timeout = timeout or timeouts()
    session = client_for(url)
    ends = time.monotonic() + deadline
    waits_end = min(ends - MIN_ATTEMPT_SECONDS, time.monotonic() + (deadline if patience is None else patience))
    slot: Slot | None = None
    answered: tuple[aiohttp.ClientResponse, Permit | None]
    try:
        if limit is not None:
            slot = await limit.aslot(patience=waits_end - time.monotonic())
        async for attempt in retrying(deadline=ends - time.monotonic(), attempts=attempts):
            with attempt:
                if limit is not None:
                    await limit.aturn(patience=waits_end - time.monotonic())
                left = max(ends - time.monotonic(), 0.001)
                sent = {"method": method, "url": url, "headers": headers, "timeout": _cut(timeout, left),
                        "json": json, "data": _form(*form) if form else None}
                if breaker is None:
                    answered = await _send(session, sent, stream, left), None
                else:
                    lent, permit = permit, None  # the caller's, for the first try: a retry asks the breaker again
                    async with breaker.guard(is_failure=is_retriable, permit=lent, record_success=lent is None):
                        answered = await _send(session, sent, stream, left), lent
    except BaseException:
        if slot is not None:
            await slot.arelease()
        if permit is not None and breaker is not None:  # ended before the first try (a cap refused it)
            await breaker.arelease(permit)
        raise
    if slot is not None and stream:
        slot.release_with(answered[0])
    elif slot is not None:
        await slot.arelease()
    return answered


def _form(fields: Mapping[str, Any], files: Mapping[str, tuple[str, bytes, str]]) -> aiohttp.FormData:
    """A multipart body; made anew for each attempt (aiohttp sends a FormData once)."""
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value if isinstance(value, str) else jsonlib.dumps(value))
    for name, (filename, content, content_type) in files.items():
        form.add_field(name, content, filename=filename, content_type=content_type)
    return form


async def _send(session: aiohttp.ClientSession, sent: dict[str, Any], stream: bool,
                left: float) -> aiohttp.ClientResponse:
    response = None
    try:
        # Phase timeouts restart on every read; this bounds the attempt as a whole.
        async with asyncio.timeout(left):
            response = await session.request(**sent, allow_redirects=False)
            if response.status >= 500:
                raise UpstreamError(response.status, (await response.read()).decode(errors="replace"))
            if not stream:
                await response.read()
    except TimeoutError as exc:  # aiohttp's own timeouts are TimeoutErrors too
        _close(response)
        raise UpstreamTimeout(f"No complete answer within {left:.1f} s" + (f" ({exc})." if str(exc) else ".")) from exc
    except aiohttp.ClientError as exc:
        _close(response)
        raise UpstreamUnreachable(str(exc) or type(exc).__name__) from exc
    except BaseException:
        _close(response)
        raise
    return response


def _close(response: aiohttp.ClientResponse | None) -> None:
    if response is not None:
        response.close()
