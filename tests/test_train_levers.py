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
