"""Training speed levers are exact: what genqa changes for speed leaves the loss and gradients as they were."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def restore_trl_device_test():
    import trl.trainer.utils as trl_utils

    saved = trl_utils._use_triton
    yield
    trl_utils._use_triton = saved


def _loss_and_grad(model, ids, labels):
    model.zero_grad()
    out = model(input_ids=ids, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grad = model.model.layers[0].mlp.down_proj.weight.grad.clone()
    return out.loss.detach(), out.log_probs.detach(), grad


def test_scoring_only_labelled_positions_gives_the_same_loss_and_gradients(tiny_llama_path, restore_trl_device_test):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from genqa.backbones.causal_lm import score_trained_positions_only

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    ids = torch.randint(5, model.config.vocab_size, (3, 40))
    labels = torch.full_like(ids, -100)
    labels[0, 30:], labels[1, 35:], labels[2, 39:] = ids[0, 30:], ids[1, 35:], ids[2, 39:]  # response-only labels
    before = _loss_and_grad(model, ids, labels)
    score_trained_positions_only()
    score_trained_positions_only()  # idempotent
    import trl.trainer.utils as trl_utils

    assert trl_utils._use_triton(torch.device("cpu"))
    after = _loss_and_grad(model, ids, labels)
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert (after[1][labels[:, 1:] == -100] == 0).all()  # unlabelled positions stay zero


def test_checkpointing_every_second_layer_is_the_default_only_when_the_recipe_is_silent(tmp_path):
    from pathlib import Path

    from genqa.backbones.loading import activation_checkpointing
    from genqa.recipe import parse_recipe
    from genqa.sft import apply_speed_defaults, explicit_keys

    text = Path("recipes/tiny/mcq.yaml").read_text(encoding="utf-8")
    silent = tmp_path / "silent.yaml"
    silent.write_text("\n".join(ln for ln in text.splitlines() if "checkpointing" not in ln) + "\n", encoding="utf-8")

    def resolved(*extra):
        argv = [str(silent), "--use_cpu", "true", "--output_dir", str(tmp_path / "run"), *extra]
        _, sft, _, recipe_path = parse_recipe(argv)
        apply_speed_defaults(sft, explicit_keys(argv, recipe_path))
        return sft

    sft = resolved()
    assert sft.activation_checkpointing and sft.activation_checkpointing_kwargs == {"every_n_layers": 2}
    assert activation_checkpointing(sft) == (True, None)  # torch.utils.checkpoint never sees every_n_layers
    assert resolved("--activation_checkpointing", "true").activation_checkpointing_kwargs is None  # asked: all layers
    assert not resolved("--activation_checkpointing", "false").activation_checkpointing


def test_every_second_layer_checkpointed_under_trl_and_peft(tiny_llama_path, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    tok = AutoTokenizer.from_pretrained(tiny_llama_path)
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, max_steps=1, report_to="none",
                     activation_checkpointing=True, activation_checkpointing_kwargs={"every_n_layers": 2})
    trainer = SFTTrainer(model=model, args=args, processing_class=tok,
                         train_dataset=Dataset.from_list([{"prompt": "a b", "completion": " c"}] * 2),
                         peft_config=LoraConfig(r=4, target_modules="all-linear"))
    trainer.train()
    flags = [layer.gradient_checkpointing for layer in trainer.model.base_model.model.model.layers]
    assert len(flags) >= 2 and flags == [i % 2 == 0 for i in range(len(flags))]
