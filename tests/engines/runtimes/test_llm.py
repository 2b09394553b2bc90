"""The LLM runtime on a tiny random-weight GPT-2 (CPU, fp32): loading, batching, limits, streaming, stops, seeds."""


import pytest
import torch

from engines.contract import EngineSpec, RuntimeLoadError
from engines.worker.runtimes.llm import BatchStreamer, LlmRuntime


def runtime_for(path, **config):
    return LlmRuntime(EngineSpec(name="tiny", kind="llm", model=path, config=config), "cpu")


@pytest.fixture(scope="module")
def llm(tiny_llm_path):
    runtime = runtime_for(tiny_llm_path, max_new_tokens=64)
    runtime.load()
    return runtime


def request(prompt="the cat sat", **fields):
    return {"prompt": prompt, "messages": None, "max_tokens": 12, "temperature": 0.0, "top_p": 1.0, "stop": [],
            "seed": None, **fields}


def run(llm, *requests):
    return llm.run_batch(list(requests), lambda index, event: None)


def test_load_reports_bytes_close_to_the_estimate_and_unload_frees(tiny_llm_path):
    runtime = runtime_for(tiny_llm_path)
    estimate = runtime.estimate_bytes()
    runtime.load()
    assert estimate / 2 <= runtime.loaded_bytes() <= estimate * 2
    assert runtime.health() == {"device": "cpu", "dtype": "float32", "parameters": runtime.model.num_parameters()}
    runtime.unload()
    assert runtime.model is None


def test_fp16_on_cpu_is_refused_with_a_reason(tiny_llm_path):
    with pytest.raises(RuntimeLoadError, match="CUDA"):
        runtime_for(tiny_llm_path, precision="fp16").load()


def test_8bit_without_cuda_is_refused(tiny_llm_path):
    with pytest.raises(RuntimeLoadError, match="8bit quantization needs a CUDA device"):
        runtime_for(tiny_llm_path, quantization="8bit").load()


def test_missing_directory_is_named(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(RuntimeLoadError, match=missing):
        runtime_for(missing).load()


def test_each_request_in_a_batch_stops_at_its_own_max_tokens(llm):
    results = run(llm, *(request(max_tokens=limit) for limit in (3, 5, 8, 12)))
    for limit, result in zip((3, 5, 8, 12), results):
        assert result["completion_tokens"] <= limit
        assert result["finish_reason"] == "stop" or result["completion_tokens"] == limit


def test_batched_greedy_answers_equal_answers_alone(llm):
    # Prompts of different lengths: left padding and the attention mask must keep rows independent.
    requests = [request("the cat", max_tokens=3), request("a quick red dog ran under the table", max_tokens=12),
                request("paris", max_tokens=8), request("model engine batch", max_tokens=5)]
    assert run(llm, *requests) == [run(llm, one)[0] for one in requests]


def test_streamed_deltas_add_up_to_the_text_and_start_before_generation_ends(llm):
    steps, events = [], []
    hook = llm.model.register_forward_hook(lambda *args: steps.append(1))
    try:
        results = llm.run_batch([request("the cat", max_tokens=16), request("paris", max_tokens=16)],
                                lambda index, event: events.append((index, event["text"], len(steps))))
    finally:
        hook.remove()
    for index, result in enumerate(results):
        assert "".join(text for row, text, _ in events if row == index) == result["text"]
        assert min(step for row, _, step in events if row == index) < len(steps)  # sent while the model still ran


def test_a_stop_string_cuts_the_text_and_its_start_is_never_streamed(llm):
    pieces = []
    full = llm.run_batch([request("the quick dog", max_tokens=16)],
                         lambda index, event: pieces.append(event["text"]))[0]
    # A stop string that spans two streamed pieces: its first half must be held back, then dropped.
    k = next(k for k in range(1, len(pieces) - 1) if "\ufffd" not in pieces[k][-1] + pieces[k + 1][0])
    stop = pieces[k][-1] + pieces[k + 1][0]
    streamed = []
    result = llm.run_batch([request("the quick dog", max_tokens=16, stop=["never", stop])],
                           lambda index, event: streamed.append(event["text"]))[0]
    assert result["text"] == full["text"][: full["text"].index(stop)]
    assert result["finish_reason"] == "stop"
    assert "".join(streamed) == result["text"]


def test_a_character_split_over_two_tokens_is_streamed_whole(llm):
    first_byte, second_byte = llm.tokenizer("é").input_ids
    eos, events = llm.tokenizer.eos_token_id, []
    streamer = BatchStreamer(llm.tokenizer, indexes=[0], limits=[8], stops=[[]], eos_ids={eos},
                             emit=lambda index, event: events.append(event["text"]))
    for tokens in ([[5]], [first_byte], [second_byte], [eos]):  # generate hands over the prompt, then one token a step
        streamer.put(torch.tensor(tokens))
    assert events == ["é"]


def test_the_end_of_sequence_token_finishes_with_stop(llm):
    eos = llm.model.generation_config.eos_token_id
    llm.model.generation_config.eos_token_id = list(range(len(llm.tokenizer)))  # whatever it picks ends the answer
    try:
        result = run(llm, request(max_tokens=6))[0]
    finally:
        llm.model.generation_config.eos_token_id = eos
    assert result == {"text": "", "finish_reason": "stop", "prompt_tokens": 3, "cached_tokens": 0,
                      "completion_tokens": 0}


def test_the_same_seed_samples_the_same_text_even_in_a_different_batch(llm):
    seeded = request(temperature=1.0, seed=7)
    alone = run(llm, seeded)[0]["text"]
    greedy, again = run(llm, request("paris"), seeded)
    assert again["text"] == alone
    assert greedy == run(llm, request("paris"))[0]
    assert run(llm, request(temperature=1.0, seed=8))[0]["text"] != alone


def test_chat_messages_are_formatted_by_the_chat_template(llm):
    messages = [{"role": "user", "content": "the cat sat"}]
    rendered = llm.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    chat = run(llm, request(prompt=None, messages=messages))[0]
    assert rendered.endswith("<|im_start|>assistant\n")
    assert chat == run(llm, request(prompt=rendered))[0]
    assert chat["prompt_tokens"] == len(llm.tokenizer(rendered).input_ids)


def test_a_prompt_longer_than_the_context_fails_only_its_own_request(llm):
    too_long, fine = run(llm, request("the cat sat " * 200), request())
    assert "256 tokens" in too_long["error"] and too_long["param"] == "prompt"
    assert fine["finish_reason"] == "length"


@pytest.mark.slow
def test_smollm2_knows_the_capital_of_france(smollm2_path):
    runtime = LlmRuntime(EngineSpec(name="smollm2", kind="llm", model=smollm2_path, config={}), "cpu")
    runtime.load()
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert "Paris" in run(runtime, request(prompt=None, messages=messages, max_tokens=32))[0]["text"]


def test_a_cancelled_request_stops_decoding_while_the_rest_of_its_batch_goes_on(llm):
    streamed = [0, 0]

    def emit(index, event):
        streamed[index] += event["type"] == "token"

    given_up = request(max_tokens=40, cancelled=lambda: streamed[0] >= 3)  # its client leaves after 3 tokens
    kept = request("a dog ran", max_tokens=40)
    stopped, finished = llm.run_batch([given_up, kept], emit)
    assert stopped["finish_reason"] == "cancelled" and stopped["completion_tokens"] <= 4
    assert finished["finish_reason"] in ("length", "stop") and streamed[1] > streamed[0]
