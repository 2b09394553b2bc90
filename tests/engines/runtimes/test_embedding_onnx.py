"""The onnx backend of the embedding runtime: MiniLM exported once (a few seconds) and checked against torch."""

import sys
from dataclasses import replace

import numpy as np
import pytest
from django.test import override_settings

from engines.contract import RuntimeLoadError
from engines.worker.runtimes import embedding_onnx
from engines.worker.runtimes.embedding import EmbeddingRuntime

TEXTS = ["cat", "kitten", "car", "The quick brown fox jumps over the lazy dog.", "word " * 500,
         " ".join(f"token{i}" for i in range(400)), "Ünïcödé, punctuation… and emoji 🙂"]


def with_config(spec, **config):
    return replace(spec, config={**spec.config, **config})


def loaded(spec, models_dir):
    runtime = EmbeddingRuntime(spec, "cpu")
    with override_settings(BLAZE_MODELS_DIR=models_dir):
        runtime.load()
    return runtime


def vectors(runtime, *requests):
    """The vectors of `requests` (each a list of texts) run as one batch, and their token counts."""
    results = runtime.run_batch([{"input": texts} for texts in requests], emit=None)
    return np.array([v for r in results for v in r["embeddings"]]), [r["prompt_tokens"] for r in results]


def assert_same_vectors(got, want):
    cosines = (got * want).sum(axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosines.min() >= 0.9999
    assert np.abs(got - want).max() <= 1e-4


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def onnx_runtime(minilm_spec, models_dir):
    runtime = loaded(with_config(minilm_spec, backend="onnx"), models_dir)
    yield runtime
    runtime.unload()


def test_vectors_match_torch_within_1e_4(onnx_runtime, minilm_runtime):
    requests = [TEXTS[:3], TEXTS[3:5], TEXTS[5:]]  # three requests in one batch, long texts cut at 256 tokens
    got, got_tokens = vectors(onnx_runtime, *requests)
    want, want_tokens = vectors(minilm_runtime, *requests)
    assert got.shape == (len(TEXTS), 384) and got.dtype == np.float32
    assert_same_vectors(got, want)
    assert np.linalg.norm(got, axis=1) == pytest.approx(1.0, abs=1e-5)
    assert got_tokens == want_tokens


def test_cut_at_max_seq_length_and_unnormalised_as_torch(minilm_spec, models_dir):
    spec = with_config(minilm_spec, max_seq_length=16, normalize=False)
    onnx, torch = loaded(with_config(spec, backend="onnx"), models_dir), loaded(spec, models_dir)
    got, got_tokens = vectors(onnx, TEXTS)
    want, want_tokens = vectors(torch, TEXTS)
    assert got_tokens == want_tokens and max(onnx.model.token_counts(TEXTS)) == 16
    assert_same_vectors(got, want)
    assert abs(np.linalg.norm(got[0]) - 1.0) > 0.01


def test_export_is_reused_by_the_next_load(onnx_runtime, minilm_spec, models_dir, monkeypatch):
    def refuse(*args):
        raise AssertionError("exported again")

    monkeypatch.setattr(embedding_onnx, "export", refuse)
    again = loaded(with_config(minilm_spec, backend="onnx"), models_dir)
    assert [folder.name for folder in (models_dir / "onnx").iterdir()] == [onnx_runtime.model.folder.name]
    assert_same_vectors(vectors(again, TEXTS[:3])[0], vectors(onnx_runtime, TEXTS[:3])[0])


def test_a_changed_model_gets_a_new_export_folder(tmp_path, settings):
    settings.BLAZE_MODELS_DIR = tmp_path / "models"
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    first = embedding_onnx.export_folder(model)
    assert embedding_onnx.export_folder(model) == first
    (model / "config.json").write_text('{"hidden_size": 8}')
    assert embedding_onnx.export_folder(model) != first
    assert first.parent == tmp_path / "models" / "onnx"


def test_repeated_text_is_a_cache_hit(onnx_runtime):
    first = onnx_runtime.run_batch([{"input": ["seen twice by onnx"]}], emit=None)[0]
    again = onnx_runtime.run_batch([{"input": ["seen twice by onnx", "and once"]}], emit=None)[0]
    assert (first["cache_hits"], again["cache_hits"]) == (0, 1)
    assert (again["embeddings"][0] == first["embeddings"][0]).all()


def test_health_and_loaded_bytes(onnx_runtime):
    health = onnx_runtime.health()
    assert (health["backend"], health["dimension"]) == ("onnx", 384)
    assert health["onnx_providers"] == ["CPUExecutionProvider"]
    assert onnx_runtime.loaded_bytes() == pytest.approx(onnx_runtime.estimate_bytes(), rel=0.01)


def test_missing_onnxruntime_is_a_load_error(minilm_spec, models_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(RuntimeLoadError, match="needs ONNX Runtime"):
        loaded(with_config(minilm_spec, backend="onnx"), models_dir)


def test_failed_export_is_a_load_error_and_leaves_nothing(minilm_spec, tmp_path, monkeypatch):
    import torch

    def unsupported(*args, **kwargs):
        raise RuntimeError("no symbolic function for aten::frobnicate")

    monkeypatch.setattr(torch.onnx, "export", unsupported)
    with pytest.raises(RuntimeLoadError, match="Could not export the embedding model in .* to ONNX: .*frobnicate"):
        loaded(with_config(minilm_spec, backend="onnx"), tmp_path)
    assert list((tmp_path / "onnx").iterdir()) == []


def test_a_broken_export_is_a_load_error_saying_what_to_delete(minilm_spec, tmp_path):
    with override_settings(BLAZE_MODELS_DIR=tmp_path):
        folder = embedding_onnx.export_folder(minilm_spec.model)
    folder.mkdir(parents=True)
    (folder / "export.json").write_text('{"inputs": [], "dimension": 384, "max_position_embeddings": 512}')
    (folder / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(RuntimeLoadError, match="(?s)Could not open the ONNX export in .*delete the folder") as error:
        loaded(with_config(minilm_spec, backend="onnx"), tmp_path)
    assert str(folder) in str(error.value)


def test_unknown_backend_is_a_400_naming_config_backend(client_for, operator_user):
    response = client_for(operator_user).post("/api/engines/", {
        "name": "vectors", "kind": "embedding", "model": "some-embedder", "config": {"backend": "tensorflow"},
    }, format="json")
    assert response.status_code == 400
    assert "config.backend" in response.json()["fields"]
