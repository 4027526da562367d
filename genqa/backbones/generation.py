"""Fast predictions from a causal LM: batched greedy generation and one-pass MCQ label scoring.

Prompts come from the same `PromptEncoder` that built the training rows, so a model is prompted exactly as it was
trained. Generation left-pads, runs length-sorted batches (`genqa.backbones.batching`), stops at EOS and at the
template's end-of-turn token, and reports examples/s. MCQ answering scores the valid option labels in one forward
pass by default (the label the model finds most likely wins), so it never produces an unparseable answer. The tokens
every prompt starts with run once per call (`SharedPrefix`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import torch

from genqa.backbones.batching import OnBatch, pad, run_batches, to_device
from genqa.backbones.lm_head import contiguous_head_input
from genqa.backbones.loading import model_device
from genqa.data.encoding import PromptEncoder

#: tokens of room a label-scored prompt leaves for its label within max_length
LABEL_ROOM = 8


def stop_token_ids(encoder: PromptEncoder) -> list[int]:
    """EOS plus the template's end-of-turn token, when that is a single token (else `stop_strings` stops on it)."""
    tok = encoder.tokenizer
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    if len(encoder.end_ids) == 1 and encoder.end_ids[0] not in ids:
        ids.append(encoder.end_ids[0])
    return ids


def encode_prompts(encoder: PromptEncoder, rows: list[dict[str, Any]], room: int | list[int]) -> list[list[int]]:
    """Prompt ids of every row, contexts cut to leave `room` tokens (one number, or one per row) within max_length;
    says how many were cut."""
    rooms = room if isinstance(room, list) else [room] * len(rows)
    encoded = [encoder.encode_prompt(ex, r) for ex, r in zip(rows, rooms, strict=True)]
    cut = sum(truncated for _, truncated in encoded)
    if cut:
        print(f"[genqa] {cut}/{len(rows)} prompts had their context cut to fit max_length={encoder.max_length} with "
              f"{max(rooms, default=0)} tokens of room for the answer (the question and options are kept)")
    return [ids for ids, _ in encoded]


class SharedPrefix:
    """The KV cache of the tokens every prompt starts with (system prompt, instruction), computed once per call.

    Each batch then runs only its rows' own tokens on top of a copy of that cache. A batch's input is the prefix
    followed by the left-padded rest of each prompt: the padding sits masked in the middle and positions are counted
    from the attention mask, so every row sees exactly the positions and tokens of its full prompt. `length` is 0
    (nothing shared, plain batches) when fewer than `min_tokens` tokens are common or the model is encoder-decoder.

    Sliding-window attention (Gemma 2/3, Mistral) counts its window in sequence slots, padding included: a row padded
    in the middle would see fewer of the prefix's tokens than its prompt alone. So on such a model a batch whose
    sequence (with `room` new tokens) would outgrow the window runs as a plain left-padded batch, where padding
    shifts every slot of a row alike and nothing changes (`window`: the model's, or None).
    """

    def __init__(self, model, prompts: list[list[int]], min_tokens: int = 16, room: int = 0) -> None:
        shared = os.path.commonprefix(prompts) if prompts else []
        self.length = min(len(shared), min(len(p) for p in prompts) - 1) if prompts else 0
        self.window, self.room = sliding_window(model), room
        self.cache = None
        if self.length < min_tokens or getattr(model.config, "is_encoder_decoder", False):
            self.length = 0
            return
        ids = torch.tensor([shared[:self.length]], device=model_device(model))
        with torch.no_grad():
            self.cache = model(input_ids=ids, use_cache=True).past_key_values
        if self.cache is None or not hasattr(self.cache, "batch_repeat_interleave"):  # a model without a KV cache
            self.length, self.cache = 0, None

    def inputs(self, seqs: list[list[int]], tokenizer) -> dict[str, Any]:
        """Model inputs for a batch of full prompts: ids and mask of prefix + left-padded rest, and the cache (plain
        left-padded prompts when nothing is shared, or when a sliding window would see the padding)."""
        length = self.length
        if length and self.window is not None and max(map(len, seqs)) + self.room > self.window \
                and len({len(s) for s in seqs}) > 1:
            length = 0
        rest = pad(tokenizer, [{"input_ids": s[length:]} for s in seqs], side="left")
        ids, mask = rest["input_ids"], rest["attention_mask"]
        if not length:
            return {"input_ids": ids, "attention_mask": mask}
        prefix = torch.tensor(seqs[0][:self.length], dtype=torch.long).expand(len(seqs), -1)
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(len(seqs))
        return {"input_ids": torch.cat([prefix, ids], dim=1),
                "attention_mask": torch.cat([torch.ones_like(prefix), mask], dim=1), "past_key_values": cache}


def sliding_window(model) -> int | None:
    """The sliding-window size of a model whose layers (some or all) attend through one, else None."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None) or []
    if not window or getattr(config, "use_sliding_window", True) is False \
            or (types and not any("sliding" in t for t in types)):
        return None
    return int(window)


def prompt_room(encoder: PromptEncoder, decoding, ex: dict[str, Any], max_new_tokens: int) -> int:
    """Tokens of room a row's prompt leaves for its answer under a task's `Decoding`: 8 for label scoring, the
    longest candidate text for text scoring (as `score_texts` leaves), `max_new_tokens` for generation."""
    if decoding.mode == "score_labels":
        return LABEL_ROOM
    if decoding.mode == "score_texts":
        return max((len(encoder.token_ids(text, is_prompt=False)) for _, text in decoding.candidates_of(ex)),
                   default=1)
    return max_new_tokens


def constraint_processor(constraint: Any, tokenizer, rows: list[dict[str, Any]], prompt_length: int,
                         stops: list[int], top_k: int, beams: int):
    """The logits processor that holds a batch's generation to a task's `Decoding.constraint`: `SpanOfContext`
    (`genqa.backbones.span_constraint`), `MCQLayout` or `GroundedLayout` (`genqa.backbones.mcq_constraint`). A new
    kind of constraint is its description (in `genqa.data`) and one line here."""
    from genqa.backbones.mcq_constraint import MCQLayoutProcessor
    from genqa.backbones.span_constraint import ContextSpanProcessor
    from genqa.data.mcq_format import MCQLayout
    from genqa.data.task import GroundedLayout, SpanOfContext

    if isinstance(constraint, SpanOfContext):
        return ContextSpanProcessor(tokenizer, [r["context"] for r in rows], prompt_length, stops,
                                    constraint.no_answer_text, top_k=top_k, beams=beams)
    if isinstance(constraint, MCQLayout):
        return MCQLayoutProcessor(tokenizer, constraint, prompt_length, stops, top_k=top_k)
    if isinstance(constraint, GroundedLayout):
        return MCQLayoutProcessor(tokenizer, constraint.layout, prompt_length, stops, top_k=top_k,
                                  contexts=[r["context"] for r in rows], lang=constraint.lang, beams=beams)
    raise TypeError(f"no logits processor for the decoding constraint {constraint!r}")


def _pad_id(tok) -> int:
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


# no_grad, not inference_mode, here and in score_labels: during training (generation-based evaluation) FSDP2 keeps the
# parameters a module first gathers in these passes for the training steps that follow, and inference tensors can't
# be saved for backward
@torch.no_grad()
@contiguous_head_input
def generate_texts(model, encoder: PromptEncoder, rows: list[dict[str, Any]], batch_size: int = 16,
                   max_new_tokens: int = 64, num_beams: int = 1, do_sample: bool = False,
                   on_batch: OnBatch | None = None, progress: bool = True,
                   prefix_cache: bool = True, constraint: Any = None, stopped: dict[int, bool] | None = None,
                   prompts: list[list[int]] | None = None) -> list[str]:
    """Greedy (or beam / sampled) generation for `rows`, batched and length-sorted; outputs in row order.

    With `prefix_cache` the tokens all prompts share are run once (see `SharedPrefix`). `constraint` is the task's
    (`Decoding.constraint`, see `constraint_processor`): with a `SpanOfContext` every answer is a span of its row's
    context or the no-answer text, with an `MCQLayout` every text is one MCQ in that layout. `stopped`, when given,
    gets for every row index whether its answer ended at EOS / end-of-turn (False: cut at `max_new_tokens`).
    `prompts`: the rows' prompt ids when the caller has encoded them already (`encode_prompts` with `max_new_tokens`
    of room).
    """
    from transformers import LogitsProcessorList

    tok = encoder.tokenizer
    prompts = encode_prompts(encoder, rows, max_new_tokens) if prompts is None else prompts
    stops = stop_token_ids(encoder)
    end_text = encoder.end_text.strip()
    device, pad_id = model_device(model), _pad_id(tok)
    # generate() does not expand a given cache for beams, so the shared prefix is used with one beam only
    shared = SharedPrefix(model, prompts if num_beams == 1 and prefix_cache else [], room=max_new_tokens)
    # an end-of-turn text that is several tokens for this tokenizer (no single stop id): stop on the text itself
    stop_text = {"stop_strings": [end_text], "tokenizer": tok} if len(encoder.end_ids) > 1 else {}

    def generate_batch(batch: list[int]) -> list[str]:
        inputs = to_device(shared.inputs([prompts[i] for i in batch], tok), device)
        extra, top_k = dict(stop_text), 1 if num_beams == 1 and not do_sample else 8
        if constraint is not None:
            extra["logits_processor"] = LogitsProcessorList([constraint_processor(
                constraint, tok, [rows[i] for i in batch], inputs["input_ids"].shape[1], stops, top_k, num_beams)])
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=do_sample, num_beams=num_beams,
                             eos_token_id=stops, pad_token_id=pad_id, **extra)
        texts = []
        for i, seq in zip(batch, out[:, inputs["input_ids"].shape[1]:].tolist(), strict=True):
            text = tok.decode(seq, skip_special_tokens=False)
            if stopped is not None:
                stopped[i] = any(s in stops for s in seq) or bool(end_text and end_text in text)
            for stop in (end_text, tok.eos_token, tok.pad_token):
                if stop:
                    text = text.split(stop, 1)[0]
            texts.append(text.strip())
        return texts

    return run_batches([len(p) for p in prompts], batch_size, generate_batch, on_batch, progress, "generating")


@torch.no_grad()
@contiguous_head_input
def score_labels(model, encoder: PromptEncoder, rows: list[dict[str, Any]], labels_of: Callable[[dict], list[str]],
                 batch_size: int = 16, on_batch: OnBatch | None = None,
                 progress: bool = True, prefix_cache: bool = True) -> list[str]:
    """Pick, for every row, the valid label whose tokens the model finds most likely after the prompt.

    Single-token labels (the usual `A`-`D`, `1`-`4`) need one forward pass per batch, on top of the cached tokens all
    prompts share when `prefix_cache` (see `SharedPrefix`); multi-token labels are scored by the summed
    log-probability of their tokens.
    """
    prompts = encode_prompts(encoder, rows, LABEL_ROOM)
    label_ids = {lab: encoder.token_ids(lab, is_prompt=False) for ex in rows for lab in labels_of(ex)}
    device = model_device(model)
    single_token = all(len(ids) == 1 for ids in label_ids.values())
    shared = SharedPrefix(model, prompts if single_token and prefix_cache else [])

    def score_batch(batch: list[int]) -> list[str]:
        labels = [labels_of(rows[i]) for i in batch]
        if single_token:
            inputs = to_device(shared.inputs([prompts[i] for i in batch], encoder.tokenizer), device)
            logp = torch.log_softmax(_last_logits(model, inputs), dim=-1).cpu()
            scores = [[float(logp[b, label_ids[lab][0]]) for lab in labs] for b, labs in enumerate(labels)]
        else:
            scores = [[_sequence_logprob(model, prompts[i], label_ids[lab], device) for lab in labs]
                      for i, labs in zip(batch, labels, strict=True)]
        return [labs[max(range(len(labs)), key=sc.__getitem__)] for labs, sc in zip(labels, scores, strict=True)]

    return run_batches([len(p) for p in prompts], batch_size, score_batch, on_batch, progress, "scoring labels")


def _last_logits(model, inputs: dict[str, Any]) -> torch.Tensor:
    """Logits of the last position only; the first tokens of `inputs` may be in its cache already (`SharedPrefix`).

    Positions come from the attention mask, so left padding (at the start, or after a shared prefix) is skipped.
    `logits_to_keep=1` skips the LM head on the prompt, where the model supports it.
    """
    mask = inputs["attention_mask"]
    cache = inputs.get("past_key_values")
    cached = cache.get_seq_length() if cache is not None else 0
    kwargs = dict(inputs, input_ids=inputs["input_ids"][:, cached:],
                  position_ids=(mask.cumsum(-1) - 1).clamp(min=0)[:, cached:])
    try:
        out = model(**kwargs, logits_to_keep=1)
    except TypeError:
        out = model(**kwargs)
    return out.logits[:, -1, :].float()


def _sequence_logprob(model, prompt: list[int], target: list[int], device) -> float:
    ids = torch.tensor([prompt + target], device=device)
    logp = torch.log_softmax(model(input_ids=ids).logits[0, len(prompt) - 1:-1].float(), dim=-1)
    return float(logp[torch.arange(len(target)), torch.tensor(target, device=device)].sum())


@torch.no_grad()
@contiguous_head_input
def score_texts(model, encoder: PromptEncoder, rows: list[dict[str, Any]],
                candidates_of: Callable[[dict], list[tuple[str, str]]], per_char: bool = False, batch_size: int = 16,
                on_batch: OnBatch | None = None, progress: bool = True) -> list[str]:
    """Pick, for every row, the candidate whose text the model finds most likely as its answer after the prompt.

    `candidates_of(row)` gives (answer, text) pairs; each text is tokenized as training tokenizes an answer and
    scored by the sum of its tokens' log-probabilities after the row's prompt (the assistant turn, as `genqa predict`
    prompts), divided by its length in characters with `per_char` (lm-evaluation-harness `acc_norm`; `acc` without).
    One forward pass per batch of rows covers all their candidates: the sequences are left-padded so every text ends
    at the last position, and the LM head runs only on the positions that predict a text token (`logits_to_keep`).
    """
    candidates, prompts, scores_of = _candidate_scorer(model, encoder, rows, candidates_of)

    def score_batch(batch: list[int]) -> list[str]:
        return [best_candidate(candidates[i], row, per_char) for i, row in zip(batch, scores_of(batch), strict=True)]

    return run_batches([len(p) for p in prompts], batch_size, score_batch, on_batch, progress, "scoring options")


@torch.no_grad()
@contiguous_head_input
def candidate_scores(model, encoder: PromptEncoder, rows: list[dict[str, Any]],
                     candidates_of: Callable[[dict], list[tuple[str, str]]], batch_size: int = 16
                     ) -> tuple[list[list[tuple[str, str]]], list[list[float]]]:
    """Every row's candidates and their summed log-probabilities (as `score_texts` computes them), in row order: one
    pass gives both of its normalisations (`best_candidate`)."""
    from genqa.backbones.batching import length_sorted_batches

    candidates, prompts, scores_of = _candidate_scorer(model, encoder, rows, candidates_of)
    out: list[list[float]] = [[] for _ in rows]
    for batch in length_sorted_batches([len(p) for p in prompts], batch_size):
        for i, row in zip(batch, scores_of(batch), strict=True):
            out[i] = row
    return candidates, out


def best_candidate(candidates: list[tuple[str, str]], scores: list[float], per_char: bool) -> str:
    """The answer of the best-scored candidate: summed log-probability, per character of its text with `per_char`."""
    norm = [s / max(1, len(text)) if per_char else s for s, (_, text) in zip(scores, candidates, strict=True)]
    return candidates[max(range(len(norm)), key=norm.__getitem__)][0]


def _candidate_scorer(model, encoder: PromptEncoder, rows: list[dict[str, Any]],
                      candidates_of: Callable[[dict], list[tuple[str, str]]]):
    """Candidates and prompts of `rows` (each prompt leaves room for its longest candidate), and a function giving a
    batch of row indices' summed candidate log-probabilities."""
    from genqa.data.task import Decoding

    candidates = [candidates_of(ex) for ex in rows]
    texts = {text: encoder.token_ids(text, is_prompt=False) for cands in candidates for _, text in cands}
    decoding = Decoding(mode="score_texts", candidates_of=candidates_of)
    prompts = encode_prompts(encoder, rows, [prompt_room(encoder, decoding, ex, 0) for ex in rows])
    device = model_device(model)

    def scores_of(batch: list[int]) -> list[list[float]]:
        targets = [[texts[text] for _, text in candidates[i]] for i in batch]
        cached = _prompt_then_texts(model, encoder.tokenizer, [prompts[i] for i in batch], targets, device)
        if cached is not None:
            return cached
        pairs = [(i, text) for i in batch for _, text in candidates[i]]
        flat = _text_logprobs(model, encoder.tokenizer, [(prompts[i], texts[text]) for i, text in pairs], device)
        out, k = [], 0
        for i in batch:
            out.append(flat[k:k + len(candidates[i])])
            k += len(candidates[i])
        return out

    return candidates, prompts, scores_of


def _prompt_then_texts(model, tokenizer, prompts: list[list[int]], targets: list[list[list[int]]], device
                       ) -> list[list[float]] | None:
    """Summed log-probability of each row's target texts after its prompt, each prompt run once: the prompts go
    through the model as one left-padded batch, their KV cache is copied once per target (`batch_select_indices`),
    and the targets (right-padded) run on top of their row's copy. A row's options share its prompt, so this costs
    about one prompt pass per row instead of one per option. None when the model keeps no such cache (then every
    (prompt + text) runs whole, `_text_logprobs`). Left padding shifts every slot of a row alike, so sliding-window
    layers see what the prompt alone gives."""
    batch = to_device(pad(tokenizer, [{"input_ids": p} for p in prompts], side="left"), device)
    mask = batch["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    try:
        out = model(**batch, position_ids=positions, use_cache=True, logits_to_keep=1)
    except TypeError:
        return None
    cache = out.past_key_values
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return None
    first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # predicts every target's first token
    owner = [b for b, row in enumerate(targets) for _ in row]
    flat = [t for row in targets for t in row]
    cache.batch_select_indices(torch.tensor(owner, device=mask.device))
    width = max(len(t) for t in flat)
    ids = torch.full((len(flat), width), _pad_id(tokenizer), dtype=torch.long, device=mask.device)
    tmask = torch.zeros_like(ids)
    for k, t in enumerate(flat):
        ids[k, :len(t)] = torch.tensor(t, device=mask.device)
        tmask[k, :len(t)] = 1
    steps = positions[owner, -1:] + 1 + torch.arange(width, device=mask.device)
    logits = model(input_ids=ids, attention_mask=torch.cat([mask[owner], tmask], dim=1), position_ids=steps,
                   past_key_values=cache, use_cache=True).logits
    logp = torch.log_softmax(logits.float(), dim=-1)  # position j predicts target token j + 1
    scores = []
    for k, t in enumerate(flat):
        rest = sum(float(logp[k, j - 1, t[j]]) for j in range(1, len(t)))
        scores.append(float(first[owner[k], t[0]]) + rest)
    result, k = [], 0
    for row in targets:
        result.append(scores[k:k + len(row)])
        k += len(row)
    return result


def _text_logprobs(model, tokenizer, pairs: list[tuple[list[int], list[int]]], device) -> list[float]:
    """Summed log-probability of each `target` after its `prompt`, all pairs in one left-padded forward pass."""
    inputs = to_device(pad(tokenizer, [{"input_ids": p + t} for p, t in pairs], side="left"), device)
    mask = inputs["attention_mask"]
    keep = max(len(t) for _, t in pairs) + 1  # the last positions: each predicts the next token of a target
    kwargs = dict(inputs, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
    try:
        logits = model(**kwargs, logits_to_keep=keep).logits
    except TypeError:
        logits = model(**kwargs).logits
    logp = torch.log_softmax(logits[:, -keep:, :].float(), dim=-1)
    out = []
    for b, (_, target) in enumerate(pairs):
        ids = torch.tensor(target, device=logp.device)
        steps = logp[b, keep - 1 - len(target):keep - 1]  # position j predicts token j + 1
        out.append(float(steps[torch.arange(len(target), device=logp.device), ids].sum()))
    return out
