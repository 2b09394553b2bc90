"""LoRA adapters on the llama.cpp runtime (the demo's SmolLM2 GGUF, CPU), with GGUF LoRA files written
here: llama.cpp applies an adapter to a whole context, so a step decodes each adapter's rows in a call
of their own; every row still gives what its adapter alone gives, and a worker checks the file is a
LoRA for the engine's architecture before it is registered."""

from pathlib import Path

import numpy
import pytest

from engines.contract import EngineSpec
from engines.worker import adapters, catalog
from engines.worker.catalog import _read_gguf_header
from engines.worker.runtimes import runtime_for

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France?", "Why is the sky blue?"]


def write_gguf_lora(path, base, seed, *, architecture="llama", rank=8):
    """A LoRA on the last block's FFN down projection of the GGUF model `base`, random and large enough to
    change its answers (each seed its own), as llama.cpp's convert_lora_to_gguf.py lays one out."""
    import gguf

    metadata, _ = _read_gguf_header(Path(base))
    blocks, width = metadata["llama.block_count"], metadata["llama.embedding_length"]
    inner = metadata["llama.feed_forward_length"]
    rng = numpy.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(rank))
    name = f"blk.{blocks - 1}.ffn_down.weight"
    writer.add_tensor(f"{name}.lora_a", rng.normal(0, 0.2, (rank, inner)).astype(numpy.float32))
    writer.add_tensor(f"{name}.lora_b", rng.normal(0, 0.2, (width, rank)).astype(numpy.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


@pytest.fixture(scope="module")
def loras(smollm2_gguf_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf-loras")
    return {name: write_gguf_lora(folder / f"{name}.gguf", smollm2_gguf_path, seed)
            for seed, name in enumerate(("north", "south"))}


@pytest.fixture(scope="module")
def llm(smollm2_gguf_path):
    runtime = runtime_for(EngineSpec(name="smol", kind="llm", model=smollm2_gguf_path,
                                     config={"max_batch_size": 6, "max_new_tokens": 64, "context_length": 256}),
                          "cpu")
    runtime.load()
    yield runtime
    runtime.unload()


def chat(content, adapter=None, loras=None):
    asked = {"messages": [{"role": "user", "content": content}], "max_tokens": 8, "temperature": 0.0}
    return {**asked, "adapter": {"name": adapter, "path": loras[adapter]}} if adapter else asked


def test_rows_of_two_adapters_and_the_base_in_one_batch_each_give_what_their_adapter_alone_gives(llm, loras, decode):
    alone = {name: [result["text"] for result in decode(llm, [chat(question, name, loras) for question in QUESTIONS])]
             for name in (None, "north", "south")}
    asked = [(question, name) for question in QUESTIONS for name in (None, "north", "south")]
    mixed = [result["text"] for result in decode(llm, [chat(question, name, loras) for question, name in asked])]
    for (question, name), text in zip(asked, mixed, strict=True):
        assert text == alone[name][QUESTIONS.index(question)], (question, name)
    assert alone["north"] != alone[None] != alone["south"] != alone["north"]
    assert set(llm.adapters) == {"north", "south"}
    assert llm.loaded_bytes() >= sum(size for _, size in llm.adapters.values()) > 0


def test_a_file_llama_cpp_cannot_load_refuses_its_own_row_only(llm, loras, smollm2_gguf_path, waiting):
    decoder = llm.decoder()
    broken = {**chat("Hi."), "adapter": {"name": "whole-model", "path": smollm2_gguf_path}}
    refused, _ = decoder.join([waiting(broken), waiting(chat("Hi.", "north", loras))])
    assert [result["param"] for _, result in refused] == ["model"]
    assert decoder.size == 1


def test_a_worker_checks_a_gguf_lora_against_the_engines_architecture(smollm2_gguf_path, loras, tmp_path):
    facts = adapters.describe(loras["north"], smollm2_gguf_path, "llama.cpp")
    assert (facts["runtime"], facts["base_model"]) == ("llama.cpp", "llama")
    other = write_gguf_lora(tmp_path / "gpt2.gguf", smollm2_gguf_path, 0, architecture="gpt2")
    with pytest.raises(catalog.CatalogError, match="LoRA for gpt2 models; the engine's model is llama"):
        adapters.describe(other, smollm2_gguf_path, "llama.cpp")
    with pytest.raises(catalog.CatalogError, match="not a LoRA adapter"):
        adapters.describe(smollm2_gguf_path, smollm2_gguf_path, "llama.cpp")
