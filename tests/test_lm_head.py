"""The LM head gets contiguous inputs while genqa predicts with a frozen model (`genqa.backbones.lm_head`): torch
otherwise expands and copies the head's weight per row. Same results, no hook left behind."""

from __future__ import annotations

import pytest
import torch

from genqa.backbones.generation import candidate_scores, encode_prompts, generate_texts, score_labels
from genqa.backbones.lm_head import contiguous_head_input
from genqa.backbones.no_answer import sequence_logprobs
from genqa.config import QAArguments
from genqa.data.encoding import PromptEncoder
from genqa.data.tasks import get_task
from genqa.data.templates import load_template

ROWS = [{"id": str(i), "context": "Paris is the capital of France. " * (i + 1), "question": f"Question {i}?",
         "options": ["Paris", "a city in the mountains", "1875"], "answers": [], "answer_starts": [], "label": -1}
        for i in range(3)]


@pytest.fixture(scope="module")
def encoder(tiny_tokenizer):
    task = get_task(QAArguments(task="mcq", options_column="options", template="chatml", mcq_mode="options"))
    return PromptEncoder(task, tiny_tokenizer, load_template("chatml"), max_length=256)


@pytest.fixture(scope="module")
def frozen(tiny_llama_path, encoder):
    """The tiny Llama with every weight frozen, as after `merge_and_unload` in memory or under a LoRA adapter."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32).eval().requires_grad_(False)
    return model, encoder


FUNCTIONS = {"generate": generate_texts, "labels": score_labels, "options": candidate_scores,
             "no_answer": sequence_logprobs}


def _call(name: str, fn, model, encoder):
    task = encoder.task
    if name == "generate":
        return fn(model, encoder, ROWS, batch_size=3, max_new_tokens=4, progress=False)
    if name == "labels":
        return fn(model, encoder, ROWS, task.labels_for, batch_size=3, progress=False)
    if name == "options":
        return fn(model, encoder, ROWS, task.option_candidates, batch_size=3)[1]
    prompts = encode_prompts(encoder, ROWS, 8)
    return fn(model, encoder, prompts, [encoder.token_ids("Paris", is_prompt=False)] * len(ROWS), batch_size=3)


def _head_inputs(model, run) -> tuple[object, list[bool]]:
    """What `run()` returns, and whether each input the head computed with was contiguous."""
    seen: list[bool] = []
    spy = model.get_output_embeddings().register_forward_hook(
        lambda module, args, output: seen.append(args[0].is_contiguous()))
    try:
        return run(), seen
    finally:
        spy.remove()


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_prediction_feeds_the_head_contiguous_inputs_and_leaves_no_hook(frozen, name):
    model, encoder = frozen
    head = model.get_output_embeddings()
    fn = FUNCTIONS[name]
    got, seen = _head_inputs(model, lambda: _call(name, fn, model, encoder))
    assert seen and all(seen), seen  # the inputs the head computed with, after genqa's pre-hook
    assert not head._forward_pre_hooks and not hasattr(head, "_genqa_contiguous_input")
    # without genqa's hook (past torch.no_grad's and contiguous_head_input's wrappers) the head sees the
    # `logits_to_keep` slice, not contiguous, and gives the same results
    with torch.no_grad():
        plain, seen = _head_inputs(model, lambda: _call(name, fn.__wrapped__.__wrapped__, model, encoder))
    assert not all(seen)
    if name in ("options", "no_answer"):
        assert torch.allclose(torch.tensor(got, dtype=torch.float64), torch.tensor(plain, dtype=torch.float64),
                              atol=1e-5)
    else:
        assert got == plain


def test_nested_calls_register_one_hook_and_the_outer_call_removes_it(frozen):
    model, _ = frozen
    head = model.get_output_embeddings()
    counts: list[int] = []

    @contiguous_head_input
    def inner(m):
        counts.append(len(head._forward_pre_hooks))

    @contiguous_head_input
    def outer(m):
        inner(m)
        counts.append(len(head._forward_pre_hooks))

    outer(model)
    assert counts == [1, 1] and not head._forward_pre_hooks
    with pytest.raises(RuntimeError):  # removed on errors too
        contiguous_head_input(lambda m: (_ for _ in ()).throw(RuntimeError("boom")))(model)
    assert not head._forward_pre_hooks and not hasattr(head, "_genqa_contiguous_input")


def test_a_model_under_a_lora_adapter_reaches_its_head(tiny_llama_path, encoder):
    """`genqa predict --adapter` and generation-based evaluation during training predict through a PeftModel: the
    hook must land on the wrapped model's head."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_path, dtype=torch.float32)
    head = base.get_output_embeddings()
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear")).eval()
    assert model.get_output_embeddings() is head
    _, seen = _head_inputs(model, lambda: _call("labels", score_labels, model, encoder))
    assert seen and all(seen) and not head._forward_pre_hooks
