"""bench/decoding.py counts the tokens each way decoded, row by row: a row that ends early (at EOS or its
own limit) counts what it produced, not the bench's --tokens."""

import torch

from bench.decoding import completion_tokens, decode_all, tokens_generated
from engines.contract import EngineSpec
from engines.worker.runtimes.llm import LlmRuntime

EOS, PAD = 0, 1


def test_a_padded_generate_counts_each_row_up_to_its_eos():
    generated = torch.tensor([[5, 6, EOS, PAD], [5, 6, 7, 8], [EOS, PAD, PAD, PAD]])
    assert tokens_generated(generated, {EOS}) == 2 + 4 + 0
    assert tokens_generated(generated, set()) == 12  # EOS held back: every row ran to the end


def test_the_running_batch_counts_what_each_row_decoded(tiny_llm_path):
    runtime = LlmRuntime(EngineSpec(name="tiny", kind="llm", model=tiny_llm_path, config={"max_new_tokens": 32}),
                         "cpu")
    runtime.load()
    runtime.eos_ids = lambda: set()
    requests = [{"prompt": f"the cat sat {n}", "messages": None, "max_tokens": limit, "temperature": 0.0,
                 "top_p": 1.0, "stop": [], "seed": 0} for n, limit in enumerate((2, 5, 9))]
    assert completion_tokens(decode_all(runtime.decoder(), requests)[1]) == 2 + 5 + 9

    runtime.eos_ids = lambda: set(range(len(runtime.tokenizer)))  # every row ends at its first token
    assert completion_tokens(decode_all(runtime.decoder(), requests)[1]) == 0
