"""Engine status follows what the workers see: loading, ready, failed with its error, recovering."""

import threading

import pytest
import redis
from django.db import connection

from engines.contract import EngineSpec
from engines.models import Engine
from engines.worker.host import EngineHost
from tests.engines.test_cache import SizedRuntime

MiB = 1024 * 1024


class FlakyRuntime(SizedRuntime):
    """Fails its first two loads the way a busy disk or a full device does, then loads."""

    failures = 0

    def load(self):
        if FlakyRuntime.failures < 2:
            FlakyRuntime.failures += 1
            raise OSError("Input/output error")
        super().load()


@pytest.fixture
def host(db):
    host = EngineHost("unit@test")
    yield host
    host.cache.clear()


def spec(engine):
    return EngineSpec(name=engine.name, kind="llm", model="m", config={"size": MiB})


def test_a_load_that_fails_for_a_passing_reason_is_retried_and_recovers(host, monkeypatch):
    engine = Engine.objects.create(name="flaky", kind="llm", model="m")
    seen = []
    monkeypatch.setattr("engines.worker.status.load_retrying",
                        lambda name, worker, attempt, error: seen.append((attempt, str(error))))
    FlakyRuntime.failures = 0
    host.cache.runtime_factory = FlakyRuntime
    host.model(spec(engine))
    assert seen == [(1, "Input/output error"), (2, "Input/output error")]
    engine.refresh_from_db()
    assert engine.status == Engine.Status.READY


def test_a_configuration_error_fails_at_once_and_shows_why(host, tmp_path):
    from engines.contract import RuntimeLoadError

    engine = Engine.objects.create(name="half", kind="llm", model=str(tmp_path), config={"precision": "fp16"})
    with pytest.raises(RuntimeLoadError):
        host.model(EngineSpec.from_engine(engine))
    engine.refresh_from_db()
    assert engine.status == Engine.Status.FAILED
    assert "unit@test" in engine.status_detail


def test_a_run_of_errors_degrades_the_engine_and_successes_restore_it(db):
    from engines.worker.status import batch_done

    engine = Engine.objects.create(name="wobbly", kind="llm", model="m", status=Engine.Status.READY)
    batch_done("wobbly", 4, 0.1, RuntimeError("CUDA error"))
    engine.refresh_from_db()
    assert engine.status == Engine.Status.DEGRADED and "failed" in engine.status_detail
    for _ in range(10):
        batch_done("wobbly", 4, 0.1, None)
    engine.refresh_from_db()
    assert engine.status == Engine.Status.READY


def test_a_batch_whose_outcome_cannot_be_recorded_leaves_the_engine_serving(host, monkeypatch):
    """Redis away (a failover, an outage): the engine's loop records each batch's outcome there, and a
    failure to must not end the loop, which would leave every later request waiting for nothing."""
    def unreachable(*args):
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("engines.worker.status.batch_done", unreachable)
    host.cache.runtime_factory = SizedRuntime
    engine = spec(Engine(name="steady", kind="llm", model="m")).as_dict()

    def answer(request_id):
        try:
            host.infer(request_id, engine, {"prompt": "p"})
        finally:
            connection.close()  # the thread's own, as a Celery worker's thread closes it

    for request_id in ("req-first", "req-second"):
        answering = threading.Thread(target=answer, args=(request_id,), daemon=True)
        answering.start()
        answering.join(timeout=10)
        assert not answering.is_alive(), f"{request_id} was never answered"
