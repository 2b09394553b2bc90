"""Which upstream failures are worth another try, and the retry policy for them (tenacity).

Retried: 5xx answers (raised as UpstreamError), timeouts, refused or dropped connections. Never a 4xx:
the same request would get the same answer. Waits are exponential with full jitter — a uniform draw
from [0, min(max_delay, base × 2^(attempt-1))] — so clients that failed together do not retry together.
An overall deadline bounds the whole: no retry starts that would begin with less than
MIN_ATTEMPT_SECONDS of it left, and `http.request` cuts each attempt's timeouts to what is left.
"""

from django.conf import settings
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

BODY_KEPT = 2000
MIN_ATTEMPT_SECONDS = 0.1  # a retry with less time than this left could only time out


class UpstreamError(Exception):
    """An upstream answered with a server error (status >= 500). `body` is the start of its answer."""

    def __init__(self, status: int, body: str = "") -> None:
        self.status, self.body = status, body[:BODY_KEPT]
        super().__init__(f"The upstream answered HTTP {status}" + (f": {self.body[:200]}" if self.body else "."))


class UpstreamTimeout(Exception):
    """An upstream did not answer within a phase's timeout or the attempt's share of the deadline."""


class UpstreamUnreachable(Exception):
    """An upstream's connection could not be opened, or broke before the answer was complete."""


def is_retriable(exc: BaseException) -> bool:
    """True for a failure another attempt may not meet: 5xx, timeout, refused/reset/dropped connection."""
    return (isinstance(exc, (UpstreamTimeout, UpstreamUnreachable))
            or (isinstance(exc, UpstreamError) and exc.status >= 500))


def retrying(*, deadline: float, attempts: int | None = None, base: float | None = None,
             max_delay: float | None = None) -> AsyncRetrying:
    """An AsyncRetrying for one upstream call: up to `attempts` tries (BLAZE_RETRY_ATTEMPTS), full-jitter
    waits (BLAZE_RETRY_BASE_SECONDS, capped at BLAZE_RETRY_MAX_DELAY_SECONDS), and no retry that would
    start later than `deadline` - MIN_ATTEMPT_SECONDS after the first try. The last failure is
    re-raised as it is.

        async for attempt in retrying(deadline=30):
            with attempt:
                ...
    """
    attempts = attempts or settings.BLAZE_RETRY_ATTEMPTS
    return AsyncRetrying(
        retry=retry_if_exception(is_retriable),
        stop=stop_after_attempt(attempts) | stop_before_delay(deadline - MIN_ATTEMPT_SECONDS),
        wait=wait_random_exponential(
            multiplier=settings.BLAZE_RETRY_BASE_SECONDS if base is None else base,
            max=settings.BLAZE_RETRY_MAX_DELAY_SECONDS if max_delay is None else max_delay,
        ),
        reraise=True,
    )
