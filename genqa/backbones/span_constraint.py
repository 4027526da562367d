"""Span-constrained decoding for generative extractive QA: every answer a causal LM writes is a span of its context.

A `transformers.LogitsProcessor` (passed to `model.generate`) keeps, at every step, only the tokens whose bytes
continue the answer written so far into a substring of the row's context, or into a prefix of the no-answer text;
the end-of-turn token is allowed once the answer is a complete (non-empty, whole-character) span or the whole
no-answer text. Why hand-written: transformers' `prefix_allowed_tokens_fn` asks for the full list of allowed tokens at
every step, which for a 49k-token vocabulary means 49k substring tests per row and step; this processor tests the
tokens in order of the model's own scores and stops as soon as `top_k` allowed ones are found, which leaves greedy
decoding exact (the best allowed token is always among them) at a few dozen tests per step.

The constraint is on bytes, not on the context's own token sequence: a model trained on answers tokenized on their
own (`Denver` without the leading space it has inside the context) writes them the same way under the constraint, and
byte-level pieces that split a multi-byte character (Vietnamese, Chinese) are handled exactly.
"""

from __future__ import annotations

import functools
import re

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@functools.lru_cache(maxsize=4)
def _piece_bytes_cached(tokenizer: PreTrainedTokenizerBase) -> tuple[bytes | None, ...]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    byte_level = all(ch in byte_of for p in pieces[:2000] if p for ch in p if ch not in "▁")
    out: list[bytes | None] = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(None)
        elif byte_level and all(ch in byte_of for ch in piece):
            out.append(bytes(byte_of[ch] for ch in piece))
        elif m := _BYTE_PIECE.match(piece):  # sentencepiece byte fallback
            out.append(bytes([int(m.group(1), 16)]))
        else:  # sentencepiece: ▁ is a space
            out.append(piece.replace("▁", " ").encode("utf-8"))
    return tuple(out)


def piece_bytes(tokenizer: PreTrainedTokenizerBase) -> tuple[bytes | None, ...]:
    """The bytes every token id stands for (None for special tokens), for byte-level BPE and sentencepiece
    vocabularies."""
    return _piece_bytes_cached(tokenizer)


def written_bytes(pieces: tuple[bytes | None, ...], generated: list[int]) -> bytes:
    """The bytes of generated token ids (special tokens and ids past the vocabulary write nothing)."""
    return b"".join(pieces[t] or b"" for t in generated if t < len(pieces))


def _is_whole_text(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return bool(data.strip())


class ContextSpanProcessor(LogitsProcessor):
    """Keeps only the tokens that continue each row's answer into a span of its context (or the no-answer text).

    `contexts[b]` is the context of batch row b, `prompt_length` the padded prompt length of the batch (generated
    tokens follow it), `end_ids` the tokens that end an answer (EOS / end-of-turn), `no_answer_text` the text of
    "no answer" ("" or None: spans only, as no-answer calibration needs). `top_k` allowed tokens are kept per row (1
    is exact for greedy decoding; beam search and sampling need more); with `beams` > 1, rows b*beams ... are the
    beams of context b.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, contexts: list[str], prompt_length: int,
                 end_ids: list[int], no_answer_text: str | None, top_k: int = 1, beams: int = 1) -> None:
        self.beams = beams
        self.pieces = piece_bytes(tokenizer)
        self.contexts = [c.encode("utf-8") for c in contexts]
        self.prompt_length, self.end_ids, self.top_k = prompt_length, list(end_ids), top_k
        self.no_answer = no_answer_text.encode("utf-8") if no_answer_text else b""
        self._candidates: dict[int, torch.Tensor] = {}

    def candidates(self, ctx: int) -> torch.Tensor:
        """Ids of every token that can appear in context `ctx`'s answers at all (its bytes occur in the context or
        in the no-answer text) and the end tokens, computed once per context: each step then ranks only these."""
        if ctx not in self._candidates:
            texts = (self.contexts[ctx], self.no_answer)
            ids = [i for i, p in enumerate(self.pieces) if p and any(p in t for t in texts)]
            self._candidates[ctx] = torch.tensor(sorted(set(ids) | set(self.end_ids)), dtype=torch.long)
        return self._candidates[ctx]

    def _allowed(self, row: int, written: bytes, token: int) -> bool:
        if token in self.end_ids:
            done_span = _is_whole_text(written) and written in self.contexts[row]
            return done_span or (bool(self.no_answer) and written == self.no_answer)
        piece = self.pieces[token] if token < len(self.pieces) else None
        if not piece:
            return False
        text = written + piece
        if 0x80 <= text[0] < 0xC0:  # starts inside a character (a UTF-8 continuation byte)
            return False
        return text in self.contexts[row] or (bool(self.no_answer) and self.no_answer.startswith(text))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            ctx = row // self.beams
            written = written_bytes(self.pieces, input_ids[row, self.prompt_length:].tolist())
            cand = self.candidates(ctx).to(scores.device)
            order = cand[torch.argsort(scores[row, cand], descending=True)]
            keep: list[int] = []
            for token in order.tolist():  # best first: stop once top_k allowed tokens are found
                if self._allowed(ctx, written, token):
                    keep.append(token)
                    if len(keep) >= self.top_k:
                        break
            keep = keep or self.end_ids  # nothing continues (cannot happen for a non-empty context): end
            out[row, keep] = scores[row, keep]
        return out
