"""bench/sentinel.py's reading of a failover: each request's status as the client saw it, the figures
from the first refusal to the last and from the kill to the first answer, and when traffic is back."""

import pytest

from bench.sentinel import Call, Traffic, ask, figures, summary

KILL, FAILOVER = 100.0, 102.0


def test_a_whole_stream_is_a_200_and_one_that_errs_after_its_200_is_not(upstream):
    base = upstream.base_url("ok").removesuffix("/v1")
    assert ask(base, "key", "stream") == 200 and ask(base, "key", "chat") == 200
    assert ask(upstream.base_url("stream_error").removesuffix("/v1"), "key", "stream") == "stream error (target_failed)"
    assert ask(upstream.base_url("fail").removesuffix("/v1"), "key", "chat") == 500


def test_the_failover_as_traffic_saw_it():
    calls = [
        Call("chat", 99.0, 99.1, 200),
        Call("stream", 99.9, 100.05, 503),  # in flight at the kill
        Call("embed", 100.5, 100.55, 503),
        Call("chat", 101.8, 101.9, 503),
        Call("embed", 102.1, 106.1, 200),  # waited for the worker's broker connection
        Call("chat", 102.2, 106.2, 200),
    ]
    assert figures(calls, KILL, FAILOVER) == {
        "failover_s": 2.0, "first_to_last_503_s": 1.85, "kill_to_first_200_s": 6.1,
        "last_failure_after_failover_s": -0.2, "requests": 6, "refused_503": 3, "other_failures": [],
        "longest_request_s": 4.0,
    }


def test_a_failure_other_than_a_refusal_is_named():
    calls = [Call("stream", 99.0, 129.0, "ReadTimeout"), Call("chat", 100.2, 100.3, 503)]
    assert figures(calls, KILL, FAILOVER)["other_failures"] == ["ReadTimeout"]
    assert figures(calls, KILL, FAILOVER)["kill_to_first_200_s"] is None


def test_traffic_is_back_when_each_kind_s_last_three_were_answered_after_the_failover():
    traffic = Traffic.__new__(Traffic)  # its records alone, no clients
    traffic.calls = [Call(kind, FAILOVER + 0.1 * i, FAILOVER + 0.1 * i + 0.05, 200)
                     for i in range(3) for kind in ("chat", "stream", "embed")]
    assert traffic.recovered(FAILOVER)
    traffic.calls.append(Call("embed", FAILOVER + 1, FAILOVER + 1.05, 503))
    assert not traffic.recovered(FAILOVER)


@pytest.mark.parametrize("feed", [1.5, None])
def test_the_summary_gives_each_figure_s_median_and_worst(feed):
    run = {"failover_s": 2.0, "first_to_last_503_s": 1.8, "kill_to_first_200_s": 6.0, "feed_resumed_s": feed,
           "longest_request_s": 4.0, "refused_503": 40, "other_failures": []}
    runs = [run, {**run, "failover_s": 3.0, "refused_503": 50}, {**run, "failover_s": 2.5}]
    line = summary(runs)
    assert (line["failover_median_s"], line["failover_max_s"], line["refused_503"]) == (2.5, 3.0, 130)
    assert ("feed_resumed_median_s" in line) is (feed is not None)
