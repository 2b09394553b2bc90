"""LoRA adapters on the transformers runtime, with adapters trained here on the tiny GPT-2: rows of
several adapters (and of the base) share one batch and each gives what its adapter alone gives; the
prefix cache never hands one adapter's KV to another; loaded adapters count in the model's size; and a
worker checks an adapter against the engine's model before it is registered."""

import json

import pytest
import torch
from safetensors.torch import save_file

from engines.contract import EngineSpec
from engines.worker import adapters, catalog
from engines.worker.cache import ModelCache
from engines.worker.runtimes.llm import LlmRuntime

pytestmark = pytest.mark.slow  # the adapters are trained first (about 10 s, once a session)

PROMPTS = ("the cat sat on the mat", "a red dog ran", "hello", "the quick model engine")
SHARED = "the quick red dog ran under the table and the slow blue cat sat on the mat . a model engine reads"


def load(path, **config):
    runtime = LlmRuntime(EngineSpec(name="tiny", kind="llm", model=path, config={"max_new_tokens": 64, **config}),
                         "cpu")
    runtime.load()
    return runtime


@pytest.fixture(scope="module")
def llm(tiny_llm_path):
    return load(tiny_llm_path)


def request(prompt, adapter=None, loras=None, max_tokens=8):
    asked = {"prompt": prompt, "messages": None, "max_tokens": max_tokens, "temperature": 0.0, "top_p": 1.0,
             "stop": [], "seed": None}
    return {**asked, "adapter": {"name": adapter, "path": loras[adapter]}} if adapter else asked


def texts(results):
    return [result["text"] for result in results]


def test_rows_of_two_adapters_and_the_base_in_one_batch_each_give_what_their_adapter_alone_gives(
        llm, tiny_loras, decode):
    alone = {name: texts(decode(llm, [request(prompt, name, tiny_loras) for prompt in PROMPTS]))
             for name in (None, "red", "blue")}
    asked = [(prompt, name) for prompt in PROMPTS for name in (None, "red", "blue")]
    mixed = texts(decode(llm, [request(prompt, name, tiny_loras) for prompt, name in asked]))
    for (prompt, name), text in zip(asked, mixed, strict=True):
        assert text == alone[name][PROMPTS.index(prompt)], (prompt, name)
    assert all(text.split() == ["red"] * 8 for text in alone["red"])
    assert all(text.split() == ["blue"] * 8 for text in alone["blue"])
    assert not set(alone[None]) & (set(alone["red"]) | set(alone["blue"]))


def test_a_mixed_batch_computes_what_pefts_own_mixed_adapter_forward_computes(llm, tiny_loras, decode):
    decode(llm, [request("hello", name, tiny_loras) for name in ("red", "blue")])  # both loaded
    rows = ["red", "__base__", "blue", "red"]
    ids = torch.tensor([llm.prompt_ids(request(prompt))[:3] for prompt in PROMPTS])
    with torch.inference_mode():
        ours = llm.forward(rows, input_ids=ids).logits
        peft = llm.lora.peft
        peft.base_model.enable_adapter_layers()
        try:
            llm.lora.run([])  # Blaze's hooks add nothing: PEFT's own LoRA paths compute
            theirs = peft(input_ids=ids, adapter_names=rows).logits
        finally:
            peft.base_model.disable_adapter_layers()
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(ours[0], ours[1], atol=1e-2)  # the adapter moved its row


def test_the_dynamic_batcher_runs_each_row_under_its_adapter_in_one_generate(tiny_llm_path, tiny_loras):
    runtime = load(tiny_llm_path, scheduler="dynamic")
    asked = [request("the cat sat", name, tiny_loras) for name in ("red", None, "blue")]
    mixed = texts(runtime.run_batch(asked, lambda index, event: None))
    assert mixed[0].split() == ["red"] * 8 and mixed[2].split() == ["blue"] * 8
    assert mixed[1] == texts(runtime.run_batch([asked[1]], lambda index, event: None))[0]


def test_rows_join_a_running_batch_under_their_own_adapter(llm, tiny_loras, waiting):
    decoder = llm.decoder()
    decoder.join([waiting(request("hello", None, tiny_loras, max_tokens=12))])
    decoder.step()
    refused, _ = decoder.join([waiting(request("hello", "blue", tiny_loras, max_tokens=4))])
    assert not refused
    while decoder.size == 2:
        finished = decoder.step()
        decoder.keep([row for row in range(2) if row not in finished])
    assert finished[1]["text"].split() == ["blue"] * 4


def test_the_prefix_cache_reuses_a_prompt_only_under_the_adapter_that_computed_it(llm, tiny_loras, decode):
    prompt, decoder = SHARED + " paris", llm.decoder()
    [base] = decode(llm, [request(prompt)], decoder)
    [first] = decode(llm, [request(prompt, "red", tiny_loras)], decoder)
    assert first["cached_tokens"] == 0  # the base's KV of the same tokens is not the adapter's
    [again] = decode(llm, [request(prompt, "red", tiny_loras)], decoder)
    assert again["cached_tokens"] > 16 and again["text"] == first["text"] != base["text"]
    [base_again] = decode(llm, [request(prompt)], decoder)
    assert base_again["cached_tokens"] > 16 and base_again["text"] == base["text"]


def test_loaded_adapters_count_in_the_models_size_and_the_cache_measures_it(tiny_llm_path, tiny_loras, decode):
    cache = ModelCache(budget_bytes=2**40, device="cpu")
    entry = cache.get(EngineSpec(name="tiny", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 64}))
    before = cache.used_bytes
    decode(entry.runtime, [request("hello", name, tiny_loras) for name in ("red", "blue")])
    cache.measure("tiny")
    sizes = entry.describe()["adapters"]
    lora = [tensor for name, tensor in entry.runtime.lora.peft.named_parameters() if ".red." in name]
    assert sizes["red"] == sizes["blue"] == sum(tensor.numel() * 4 for tensor in lora) > 0
    assert cache.used_bytes == entry.bytes == before + sizes["red"] + sizes["blue"]
    cache.clear()


def test_an_adapter_registered_again_from_another_path_is_loaded_again(tiny_llm_path, tiny_loras, decode):
    runtime = load(tiny_llm_path)
    [first] = decode(runtime, [request("hello", "red", tiny_loras)])
    [moved] = decode(runtime, [{**request("hello"), "adapter": {"name": "red", "path": tiny_loras["blue"]}}])
    assert first["text"].split() == ["red"] * 8 and moved["text"].split() == ["blue"] * 8
    assert runtime.adapters["red"][0] == tiny_loras["blue"]


def test_an_adapter_that_cannot_load_refuses_its_own_row_only(llm, tiny_loras, tmp_path, waiting):
    decoder = llm.decoder()
    broken = {**request("hello"), "adapter": {"name": "broken", "path": str(tmp_path)}}
    refused, _ = decoder.join([waiting(broken), waiting(request("hello", "red", tiny_loras))])
    assert [(result["param"], "broken" in result["error"]) for _, result in refused] == [("model", True)]
    assert decoder.size == 1 and "broken" not in llm.adapters


def test_a_worker_finds_a_peft_adapter_fits_the_model_it_was_trained_on(tiny_llm_path, tiny_loras):
    facts = adapters.describe(tiny_loras["red"], tiny_llm_path, "transformers")
    assert (facts["runtime"], facts["base_model"], facts["rank"]) == ("transformers", tiny_llm_path, 8)
    assert facts["parameters"] > 0 and facts["size_bytes"] > 0


def test_an_adapter_trained_on_another_model_is_refused_naming_the_module(tiny_llm_path, tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "base_model_name_or_path": "a-32-wide-gpt2"}))
    module = "base_model.model.transformer.h.0.attn.c_attn"
    save_file({f"{module}.lora_A.weight": torch.zeros(4, 32), f"{module}.lora_B.weight": torch.zeros(96, 4)},
              tmp_path / "adapter_model.safetensors")
    with pytest.raises(catalog.CatalogError, match="transformer.h.0.attn.c_attn.*a-32-wide-gpt2"):
        adapters.describe(tmp_path, tiny_llm_path, "transformers")


def test_what_is_not_a_lora_adapter_is_refused_with_why(tiny_llm_path, tmp_path):
    with pytest.raises(catalog.CatalogError, match="no adapter_config.json"):
        adapters.describe(tiny_llm_path, tiny_llm_path, "transformers")
    with pytest.raises(catalog.CatalogError, match="does not exist"):
        adapters.describe(tmp_path / "nothing", tiny_llm_path, "transformers")
    with pytest.raises(catalog.CatalogError, match="not a GGUF file"):
        adapters.describe(tmp_path, tiny_llm_path, "llama.cpp")
