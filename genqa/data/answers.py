"""Answers and their contexts: gold answers read from a source row, and a generated answer read back onto its context.

A causal LM asked for a span may change case or spacing, or add quotes and a final period. `map_to_context` finds
the span of the context the answer stands for: as written, stripped of quotes and punctuation, or after Unicode NFC,
case folding and collapsing whitespace; otherwise it reports the answer as not in its context. `find_nfc` finds an
answer in its context when the two differ only in Unicode composition (an NFD context, an NFC answer).

`nearest_span` reads a free answer that is still no span (a syllable changed, a word dropped or added) back as the
span of its context most like it: answers stay spans without holding decoding to one (span-constrained decoding
follows the first token the model prefers, and an answer that begins with a word the context only has in another
case, or differs by a syllable, goes elsewhere). Candidates are the spans of whole words (CJK: characters) within
`slack` units of the answer's length, compared after case folding by `difflib`'s character similarity
(2·matches / total length); the first best span wins. Hand-written because no library aligns a generated answer to
its source text.

Both compare normalised text and map the match back to the original characters through a per-character index:
the text is cut into clusters (a character and the combining marks after it), each cluster is normalised on its
own, and every normalised character remembers the cluster it came from. Normalising the whole string at once would
lose that mapping whenever NFC or case folding changes the length (`"İ".lower()` is two characters). Hand-written
because no library maps a normalised match back to the original characters.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable
from typing import Any

from genqa.config import QAArguments
from genqa.data.task import _text
from genqa.errors import DataError


def _clusters(text: str) -> list[tuple[int, int]]:
    """(start, end) of each character together with the combining marks that follow it."""
    out: list[tuple[int, int]] = []
    for i, ch in enumerate(text):
        if out and unicodedata.combining(ch):
            out[-1] = (out[-1][0], i + 1)
        else:
            out.append((i, i + 1))
    return out


def _norm_with_map(text: str, fold: Callable[[str], str], collapse_space: bool) -> tuple[str, list[tuple[int, int]]]:
    """`text` normalised cluster by cluster (`fold` of its NFC form; whitespace runs become one space), with the
    (start, end) of the original cluster each normalised character came from."""
    out: list[str] = []
    spans: list[tuple[int, int]] = []
    for start, end in _clusters(text):
        cluster = text[start:end]
        if collapse_space and cluster.isspace():
            if out and out[-1] != " ":
                out.append(" ")
                spans.append((start, end))
            continue
        for ch in fold(unicodedata.normalize("NFC", cluster)):
            out.append(ch)
            spans.append((start, end))
    return "".join(out), spans


def _find_all(needle: str, haystack: str) -> list[int]:
    found, pos = [], haystack.find(needle)
    while needle and pos >= 0:
        found.append(pos)
        pos = haystack.find(needle, pos + 1)
    return found


def find_nfc(answer: str, context: str) -> list[tuple[int, int]]:
    """Every (start, end) of `context` whose NFC form equals the NFC form of `answer` (clusters kept whole)."""
    norm_ctx, spans = _norm_with_map(context, lambda s: s, collapse_space=False)
    norm_ans = unicodedata.normalize("NFC", answer)
    n, out = len(norm_ans), []
    for p in _find_all(norm_ans, norm_ctx):
        whole = (p == 0 or spans[p - 1] != spans[p]) and (p + n == len(spans) or spans[p + n] != spans[p + n - 1])
        if whole:  # a match must not end inside a character's combining marks ("0" is not in "0\u0300")
            out.append((spans[p][0], spans[p + n - 1][1]))
    return out


def map_to_context(answer: str, context: str) -> tuple[str, str]:
    """Map a generated answer onto its context: (span, how) with how = exact / normalized / not_in_context (the span
    is always a substring of `context` unless not_in_context)."""
    if not answer:
        return "", "no_answer"
    if answer in context:
        return answer, "exact"
    # an answer cut off by the token budget inside a multi-byte character (byte-level BPE) decodes with a trailing
    # U+FFFD: that partial character is not part of the span
    answer = answer.rstrip("\ufffd")
    if not answer:
        return "", "not_in_context"
    if answer in context:
        return answer, "exact"
    stripped = answer.strip(" \t\n\"'.,;:!?")
    if stripped and stripped in context:
        return stripped, "exact"
    norm_ctx, spans = _norm_with_map(context, str.casefold, collapse_space=True)
    norm_ans = _norm_with_map(stripped or answer, str.casefold, collapse_space=True)[0].strip()
    pos = norm_ctx.find(norm_ans) if norm_ans else -1
    if pos >= 0:
        return context[spans[pos][0]:spans[pos + len(norm_ans) - 1][1]], "normalized"
    return answer, "not_in_context"


_CJK = "\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af"
_UNIT = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")  # a CJK character or a run of other non-space characters
_EDGE = " \t\n\"'.,;:!?()[]“”‘’「」『』，。；：！？（）、"


def nearest_span(answer: str, context: str, slack: int = 3) -> str:
    """The span of `context` most like `answer` (character similarity after case folding), among spans of whole
    words (CJK: characters) within `slack` units of the answer's length, stripped of edge punctuation; "" when the
    answer or the context is empty. A span of the context is returned as it is."""
    answer = answer.strip()
    if not answer or answer in context:
        return answer
    units = [(m.start(), m.end()) for m in _UNIT.finditer(context)]
    n = len(_UNIT.findall(answer))
    matcher = difflib.SequenceMatcher(None, autojunk=False)
    matcher.set_seq2(answer.casefold())
    best, best_ratio = "", -1.0
    for a in range(len(units)):
        for b in range(a + max(0, n - 1 - slack), min(len(units), a + n + slack)):
            span = context[units[a][0]:units[b][1]].strip(_EDGE)
            if not span:
                continue
            matcher.set_seq1(span.casefold())
            # the cheap upper bounds first: most candidates are out before the full comparison
            if matcher.real_quick_ratio() <= best_ratio or matcher.quick_ratio() <= best_ratio:
                continue
            ratio = matcher.ratio()
            if ratio > best_ratio:
                best, best_ratio = span, ratio
    return best


def answer_starts(raw: Any, where: str) -> list[int]:
    """Answer offsets as whole numbers; anything else (`"abc"`, 1.5, a dict) is a `DataError` naming the row."""
    out = []
    for value in raw if isinstance(raw, (list, tuple)) else [raw]:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip().lstrip("-").isdigit():
            raise DataError(f"{where}: answer start {value!r} is not a whole number (a character offset into the "
                            "context).")
        out.append(int(value))
    return out


def gold_answers(row: dict[str, Any], args: QAArguments, where: str) -> tuple[list[str], list[int]]:
    """The gold answer texts of an extractive row (a string, a list, or a SQuAD `answers` dict) and their offsets."""
    value = row[args.answer_column]
    starts: list[int] = []
    if isinstance(value, dict):  # HF squad `answers` = {"text": [...], "answer_start": [...]}
        texts_value = value.get("text", [])
        if not isinstance(texts_value, (list, tuple)):
            raise DataError(f"{where}: `{args.answer_column}` is a dict whose `text` is not a list of answers.")
        texts = [_text(t) for t in texts_value]
        starts = answer_starts(value.get("answer_start", []), where)
    elif isinstance(value, (list, tuple)):
        texts = [_text(t) for t in value]
    else:
        texts = [_text(value)] if _text(value).strip() else []
    if args.answer_start_column and row.get(args.answer_start_column) not in (None, ""):
        starts = answer_starts(row[args.answer_start_column], where)
    return [t for t in texts if t.strip()], starts


def locate_answer(text: str, start: int, context: str, where: str) -> tuple[int, int]:
    """(start, end) of answer `text` in `context`: at `start` when it is there, else the occurrence nearest to it;
    compared in Unicode NFC when the raw strings differ (an NFD context, an NFC answer)."""
    if 0 <= start and context[start:start + len(text)] == text:
        return start, start + len(text)
    found = [(m.start(), m.end()) for m in re.finditer(re.escape(text), context)] or find_nfc(text, context)
    if not found:
        raise DataError(f"{where}: answer {text!r} does not occur in its context. Fix the answer or the context, or "
                        "drop the row from the source.")
    return min(found, key=lambda span: abs(span[0] - start)) if start >= 0 else found[0]
