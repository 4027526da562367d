"""Reading a generated answer back onto its context (generative extractive QA).

A causal LM asked for a span may change case or spacing, or add quotes and a final period. `map_to_context` finds
the span of the context the answer stands for: as written, stripped of quotes and punctuation, or after lower-casing
and collapsing whitespace (NFC first); otherwise it reports the answer as not in its context. Hand-written because
no library maps a normalised match back to the original characters.
"""

from __future__ import annotations

import unicodedata


def _norm_with_map(text: str) -> tuple[str, list[int]]:
    """Lower-cased, whitespace-collapsed text (give it NFC text), with each char's index in the original."""
    out, idx = [], []
    prev_space = False
    for i, ch in enumerate(text):
        ch = ch.lower()
        if ch.isspace():
            if prev_space or not out:
                continue
            ch, prev_space = " ", True
        else:
            prev_space = False
        out.append(ch)
        idx.append(i)
    return "".join(out), idx


def map_to_context(answer: str, context: str) -> tuple[str, str]:
    """Map a generated answer onto its context: (span, how) with how = exact / normalized / not_in_context."""
    if not answer:
        return "", "no_answer"
    if answer in context:
        return answer, "exact"
    stripped = answer.strip(" \t\n\"'.,;:!?")
    if stripped and stripped in context:
        return stripped, "exact"
    ctx = unicodedata.normalize("NFC", context)
    norm_ctx, idx = _norm_with_map(ctx)
    norm_ans = _norm_with_map(unicodedata.normalize("NFC", stripped or answer))[0].strip()
    pos = norm_ctx.find(norm_ans) if norm_ans else -1
    if pos >= 0:
        return ctx[idx[pos]:idx[pos + len(norm_ans) - 1] + 1], "normalized"
    return answer, "not_in_context"
