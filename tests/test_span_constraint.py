"""Span-constrained decoding and no-answer calibration on the tiny offline Llama (untrained: it writes anything)."""

from __future__ import annotations

import pytest

from genqa.backbones.generation import generate_texts
from genqa.backbones.no_answer import apply_threshold, best_threshold, null_score_diffs
from genqa.config import QAArguments
from genqa.data.encoding import PromptEncoder
from genqa.data.task import SpanOfContext
from genqa.data.tasks import get_task
from genqa.data.templates import load_template

ROWS = [{"id": str(i), "context": c, "question": q, "options": [], "answers": [], "answer_starts": [], "label": -1}
        for i, (c, q) in enumerate([("The bridge was finished in 1902 by local masons.", "When?"),
                                    ("Cây cầu được xây năm 1902 ở Huế.", "Ở đâu?"),
                                    ("小明每天騎腳踏車上學。", "小明怎麼上學？")])]


@pytest.fixture(scope="module")
def model_and_encoder(tiny_llama_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama_path)
    tok.padding_side = "left"
    task = get_task(QAArguments(task="extractive", template="chatml"))
    return AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval(), PromptEncoder(
        task, tok, load_template("chatml"), max_length=256)


def test_every_constrained_answer_is_a_span(model_and_encoder):
    model, encoder = model_and_encoder
    free = generate_texts(model, encoder, ROWS, max_new_tokens=12, progress=False)
    spans = generate_texts(model, encoder, ROWS, max_new_tokens=12, progress=False,
                           constraint=SpanOfContext("unanswerable"))
    assert any(f not in r["context"] for f, r in zip(free, ROWS, strict=True))  # the untrained model writes anything
    for s, r in zip(spans, ROWS, strict=True):
        assert s == "unanswerable" or (s and s in r["context"]), s
    only = generate_texts(model, encoder, ROWS, max_new_tokens=12, progress=False, constraint=SpanOfContext())
    assert all(s and s in r["context"] for s, r in zip(only, ROWS, strict=True))


def test_null_score_diffs_and_threshold(model_and_encoder):
    model, encoder = model_and_encoder
    spans = ["1902", "Huế", "騎腳踏車"]
    diffs = null_score_diffs(model, encoder, ROWS, spans, "unanswerable", batch_size=2)
    alone = null_score_diffs(model, encoder, ROWS[:1], spans[:1], "unanswerable", batch_size=1)
    assert diffs[0] == pytest.approx(alone[0], abs=1e-3)  # padding in a batch changes nothing
    assert apply_threshold(spans, diffs, max(diffs)) == spans
    assert apply_threshold(spans, diffs, min(diffs) - 1) == ["", "", ""]


def test_sequence_logprobs_read_only_the_target_positions_right(model_and_encoder):
    """Scored from the last positions' logits only (`logits_to_keep`): the same sums as the full logits give."""
    import torch

    from genqa.backbones.generation import encode_prompts
    from genqa.backbones.no_answer import completion_ids, sequence_logprobs

    model, encoder = model_and_encoder
    prompts = encode_prompts(encoder, ROWS, 12)
    targets = [completion_ids(encoder, t) for t in ("1902", "unanswerable", "騎腳踏車")]
    got = sequence_logprobs(model, encoder, prompts, targets, batch_size=3)
    for prompt, target, value in zip(prompts, targets, got, strict=True):
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([prompt + target])).logits[0].float(), dim=-1)
        want = sum(float(logp[len(prompt) - 1 + k, t]) for k, t in enumerate(target))
        assert value == pytest.approx(want, abs=1e-3)


def test_best_threshold_sweeps_like_squad():
    # rows 0/1 answerable (span F1 1 and 0.5), row 2 unanswerable; answering row 2 costs its point
    thr, score = best_threshold([-3.0, 1.0, 2.0], [1.0, 0.5, 0.0], [True, True, False])
    assert thr == 1.0 and score == pytest.approx(100 * 2.5 / 3)
    thr, score = best_threshold([5.0, 6.0], [0.0, 0.0], [False, False])
    assert thr < 5.0 and score == 100.0
