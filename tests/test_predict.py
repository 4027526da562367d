"""The shared-prefix cache behind label scoring and batched generation gives what the full prompts give, on the tiny
Llama and the tiny Gemma 3 (sliding-window layers with a window of 48 slots, shorter than the longest prompts here:
the padding that sits in the middle of a batch must not shift any row's window)."""

from __future__ import annotations

import pytest
import torch

from genqa.backbones.generation import SharedPrefix, _last_logits


@pytest.fixture(scope="module", params=["tiny:llama", "tiny:gemma3"])
def path(request) -> str:
    from genqa.backbones.loading import resolve_model_path

    return resolve_model_path(request.param)


@pytest.fixture(scope="module")
def model(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def tok(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _prompts(n_shared: int = 24) -> list[list[int]]:
    """Prompts sharing `n_shared` tokens, with rests of different lengths (so the batch is padded)."""
    g = torch.Generator().manual_seed(0)
    shared = torch.randint(10, 1000, (n_shared,), generator=g).tolist()
    return [shared + torch.randint(10, 1000, (k,), generator=g).tolist() for k in (3, 17, 9, 30)]


@torch.inference_mode()
def test_shared_prefix_gives_the_full_prompts_last_logits(model, tok):
    prompts = _prompts()
    shared = SharedPrefix(model, prompts)
    assert shared.length == 24
    inputs = shared.inputs(prompts, tok)
    if shared.window is None:
        assert inputs["input_ids"].shape == (4, 24 + 30) and inputs["past_key_values"].get_seq_length() == 24
    cached = _last_logits(model, inputs)
    alone = torch.stack([model(input_ids=torch.tensor([p])).logits[0, -1] for p in prompts])
    assert torch.allclose(cached, alone, atol=1e-4), (cached - alone).abs().max()
    if shared.window is not None:  # tiny Gemma 3: the 54-slot batch outgrows the window and runs without the cache
        assert "past_key_values" not in shared.inputs(prompts, tok)
        short = [p for p in prompts if len(p) < 48]  # within the window: cached, padding in the middle, still exact
        inputs = shared.inputs(short, tok)
        assert inputs["past_key_values"].get_seq_length() == 24 and inputs["input_ids"].shape == (3, 24 + 17)
        assert torch.allclose(_last_logits(model, inputs), alone[[p in short for p in prompts]], atol=1e-4)
    # the cache is copied per batch: a second batch on the same prefix gives the same answer
    assert torch.allclose(_last_logits(model, shared.inputs(prompts, tok)), cached)


@torch.inference_mode()
def test_shared_prefix_generation_matches_one_prompt_at_a_time(model, tok):
    prompts = _prompts()
    shared = SharedPrefix(model, prompts)
    inputs = shared.inputs(prompts, tok)
    out = model.generate(**inputs, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=3)
    for row, prompt in zip(out[:, inputs["input_ids"].shape[1]:].tolist(), prompts, strict=True):
        ids = torch.tensor([prompt])
        alone = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                               min_new_tokens=6, do_sample=False, pad_token_id=3)
        assert row == alone[0, len(prompt):].tolist()


def test_short_or_missing_prefix_means_plain_batches(model, tok):
    assert SharedPrefix(model, _prompts(n_shared=5)).length == 0  # under min_tokens: not worth a cache
    assert SharedPrefix(model, []).length == 0
    one = [list(range(10, 40))]
    assert SharedPrefix(model, one).length == 29  # a lone prompt keeps one token of its own to score
    plain = SharedPrefix(model, _prompts(n_shared=5)).inputs(_prompts(n_shared=5), tok)
    assert set(plain) == {"input_ids", "attention_mask"}


@torch.inference_mode()
def test_shared_prefix_under_a_lora_adapter(model, tok):
    """Unmerged adapters (generate --adapter) go through the same cache path."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    try:
        prompts = _prompts()
        shared = SharedPrefix(peft_model, prompts)
        cached = _last_logits(peft_model, shared.inputs(prompts, tok))
        alone = torch.stack([peft_model(input_ids=torch.tensor([p])).logits[0, -1] for p in prompts])
        assert torch.allclose(cached, alone, atol=1e-4)
    finally:
        peft_model.unload()
