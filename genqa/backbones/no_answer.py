"""No-answer calibration for generative extractive QA with a causal LM (SQuAD 2.0, UIT-ViQuAD 2.0).

Encoder QA decides "no answer" by comparing the null score with the best span's score against
`null_score_diff_threshold`. A causal LM has no null logit, so genqa scores the two completions it could write: the
no-answer text and the best span (decoded under the span constraint with no-answer not allowed), each followed by the
end-of-turn token, as summed log-probabilities given the prompt. `diff = logp(no-answer) - logp(span)`; the answer is
"" when `diff > threshold`. `best_threshold` picks the threshold on validation rows as the official SQuAD 2.0
evaluation's `find_best_thresh` does (sweep the sorted diffs, keep the best total score).
"""

from __future__ import annotations

from typing import Any

import torch

from genqa.backbones.batching import pad, run_batches, to_device
from genqa.backbones.generation import encode_prompts
from genqa.backbones.lm_head import contiguous_head_input
from genqa.backbones.loading import model_device
from genqa.data.encoding import PromptEncoder


def completion_ids(encoder: PromptEncoder, text: str) -> list[int]:
    """The ids the model was trained to write for answer `text`: the text and the end-of-turn token."""
    return encoder.token_ids(text + encoder.end_text.rstrip(), is_prompt=False)


@torch.no_grad()
@contiguous_head_input
def sequence_logprobs(model, encoder: PromptEncoder, prompts: list[list[int]], targets: list[list[int]],
                      batch_size: int = 16) -> list[float]:
    """Summed log-probability of every `targets[i]` after `prompts[i]` (teacher forced, batched, left-padded)."""
    device = model_device(model)

    def score(batch: list[int]) -> list[float]:
        seqs = [prompts[i] + targets[i] for i in batch]
        inputs = to_device(pad(encoder.tokenizer, [{"input_ids": s} for s in seqs], side="left"), device)
        mask = inputs["attention_mask"]
        kwargs = dict(inputs, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        keep = max(len(targets[i]) for i in batch) + 1  # only the positions that predict a target token
        try:
            logits = model(**kwargs, logits_to_keep=keep).logits.float()
        except TypeError:  # a model without logits_to_keep: every position
            logits = model(**kwargs).logits.float()
        width = inputs["input_ids"].shape[1]
        offset = width - logits.shape[1]  # position of logits[:, 0] in the sequence
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        out = []
        for b, i in enumerate(batch):
            n = len(targets[i])
            tgt = inputs["input_ids"][b, width - n:]
            out.append(float(logp[b, width - n - 1 - offset:width - 1 - offset].gather(-1, tgt[:, None]).sum()))
        return out

    lengths = [len(p) + len(t) for p, t in zip(prompts, targets, strict=True)]
    return run_batches(lengths, batch_size, score, None, False, "scoring no-answer")


def null_score_diffs(model, encoder: PromptEncoder, rows: list[dict[str, Any]], spans: list[str],
                     no_answer_text: str, batch_size: int = 16, room: int = 48,
                     prompts: list[list[int]] | None = None) -> list[float]:
    """`logp(no-answer text) - logp(span)` for every row, each with its end-of-turn token, given the row's prompt
    (`prompts`, when the caller encoded them already with `room` tokens of room)."""
    prompts = encode_prompts(encoder, rows, room) if prompts is None else prompts
    null = completion_ids(encoder, no_answer_text)
    null_lp = sequence_logprobs(model, encoder, prompts, [null] * len(rows), batch_size)
    span_lp = sequence_logprobs(model, encoder, prompts, [completion_ids(encoder, s) for s in spans], batch_size)
    return [n - s for n, s in zip(null_lp, span_lp, strict=True)]


def apply_threshold(spans: list[str], diffs: list[float], threshold: float) -> list[str]:
    """"" (no answer) where the no-answer text beats the span by more than `threshold`, else the span."""
    return ["" if d > threshold else s for s, d in zip(spans, diffs, strict=True)]


def best_threshold(diffs: list[float], span_scores: list[float], has_answer: list[bool]) -> tuple[float, float]:
    """The threshold that maximises the summed score on validation rows, and that score as a percentage.

    `span_scores[i]` is what answering with the span earns on row i (its F1 against the golds, 0 for an
    unanswerable row); answering "" earns 1 on an unanswerable row and 0 otherwise (official SQuAD 2.0 scoring).
    """
    if not diffs:
        return 0.0, 0.0
    score = sum(0.0 if has else 1.0 for has in has_answer)  # threshold below every diff: every row no-answer
    best, best_thr = score, min(diffs) - 1.0
    for i in sorted(range(len(diffs)), key=lambda i: diffs[i]):  # raising the threshold past diffs[i] answers row i
        score += span_scores[i] - (0.0 if has_answer[i] else 1.0)
        if score > best:
            best, best_thr = score, diffs[i]
    return best_thr, 100.0 * best / max(1, len(diffs))
