"""Fixtures of the runtime tests, used by name."""

import pytest


class Item:
    """A waiting request as a decoder takes it (the scheduler's `Waiting`, less the scheduling)."""

    def __init__(self, request):
        self.request = request

    def emit(self, event):
        pass


def decoded(runtime, requests, decoder=None):
    """Every request joined to one running batch at once (of `decoder`, else a new one) and stepped to the
    end: each request's result, in order."""
    decoder = decoder or runtime.decoder()
    refused, finished = decoder.join([Item(each) for each in requests])
    assert not refused, refused
    results, running = {}, list(range(len(requests)))
    while True:
        for row, result in finished.items():
            results[running[row]] = result
        decoder.keep([row for row in range(len(running)) if row not in finished])
        running = [index for row, index in enumerate(running) if row not in finished]
        if not running:
            return [results[index] for index in range(len(requests))]
        finished = decoder.step()


@pytest.fixture
def decode():
    """decode(runtime, requests, decoder=None) → each request's result, all decoded in one running batch."""
    return decoded


@pytest.fixture
def waiting():
    """waiting(request) → the request as a decoder's `join` takes it."""
    return Item
