"""QA metrics as pure functions: SQuAD v1.1 / v2.0 EM and F1, MCQ accuracy, MCQ-generation layout quality (with
two content proxies the layout does not see).

The SQuAD functions reproduce the official evaluation scripts (v1.1 `evaluate-v1.1.py`, v2.0
`evaluate-v2.0.py` without a no-answer probability file) to the last bit: same normalisation, same per-question
scores, same summation order and formula (`100.0 * sum / total`). Each version keeps its own quirks:

- v1.1: F1 of two empty answers is 0; gold answers are used as given; reports `exact_match` and `f1`.
- v2.0: gold answers that normalise to "" are dropped, an unanswerable question's only gold is ""; F1 of two empty
  answers is 1; reports `exact, f1, total` plus `HasAns_*` / `NoAns_*` when such questions exist.

A missing prediction scores 0 under both versions and is counted in `total` (one line on stderr says how many).
That is what the official v1.1 script does; the official v2.0 script instead leaves such questions out of
`exact`/`f1`/`total` and then crashes (ZeroDivisionError) when every question of its HasAns or NoAns group lacks a
prediction. Scores of complete prediction sets are identical to both scripts.

`lang` adds language-aware normalisation without changing the default (`"en"` = official):
`"vi"` applies Unicode NFC first (composed and decomposed diacritics compare equal); `"zh"` applies NFC,
lowercases, drops ASCII and CJK / Unicode punctuation and all whitespace, and scores F1 over characters.
"""

from __future__ import annotations

import collections
import re
import string
import sys
import unicodedata
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Literal

from genqa.data.mcq_format import FAILURE_CODES, option_key, parse_mcq
from genqa.errors import GenqaError

LANGS: tuple[str, ...] = ("en", "vi", "zh")
_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
#: CJK punctuation removed for `lang="zh"` (besides ASCII punctuation and any Unicode `P*` character).
ZH_PUNCTUATION = ("，。！？；：、“”‘’（）《》【】「」『』〈〉〔〕…—～·．－﹏"
                  "＂＃＄％＆＇＊＋／＜＝＞＠［＼］＾＿｀｛｜｝￥")
_ZH_PUNCT = _PUNCT | set(ZH_PUNCTUATION)


def _check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"Unknown lang {lang!r}; use one of {', '.join(LANGS)}.")


def _normalize_official(s: str) -> str:
    """The official SQuAD `normalize_answer`: lower, drop punctuation, drop articles, fix whitespace."""
    text = s.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = re.sub(_ARTICLES, " ", text)
    return " ".join(text.split())


def _is_zh_punct(ch: str) -> bool:
    return ch in _ZH_PUNCT or unicodedata.category(ch).startswith("P")


def normalize_answer(s: str, lang: str = "en") -> str:
    """Normalise an answer for EM/F1; `en` is the official SQuAD rule, `vi` adds NFC, `zh` is character-based."""
    _check_lang(lang)
    if lang == "en":
        return _normalize_official(s)
    s = unicodedata.normalize("NFC", s)
    if lang == "vi":  # NFC again: dropping punctuation can leave a combining mark next to a letter
        return unicodedata.normalize("NFC", _normalize_official(s))
    return unicodedata.normalize("NFC", "".join(ch for ch in s.lower() if not ch.isspace() and not _is_zh_punct(ch)))


def get_tokens(s: str, lang: str = "en") -> list[str]:
    """Tokens F1 is computed over: normalised words (`en`, `vi`) or normalised characters (`zh`)."""
    if not s:
        return []
    norm = normalize_answer(s, lang)
    return list(norm) if lang == "zh" else norm.split()


def exact_match_score(pred: str, gold: str, lang: str = "en") -> int:
    """1 when the normalised prediction equals the normalised gold answer, else 0."""
    return int(normalize_answer(gold, lang) == normalize_answer(pred, lang))


def f1_score(pred: str, gold: str, lang: str = "en", version: Literal[1, 2] = 2) -> float:
    """Token F1 of prediction vs one gold answer; with `version=2` two empty answers score 1 (v1.1: 0)."""
    gold_toks = get_tokens(gold, lang)
    pred_toks = get_tokens(pred, lang)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if version == 2 and (len(gold_toks) == 0 or len(pred_toks) == 0):
        # If either is no-answer, then F1 is 1 if they agree, 0 otherwise (official v2.0)
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


class ScoringError(GenqaError, ValueError):
    """A prediction that cannot be scored (not a string); the message names its id."""


def _as_text(value: Any, qid: Hashable = None) -> str:
    """A prediction as text: None is the empty answer; anything but a string (`true`, `3`, a list) is refused
    rather than scored as its Python spelling ("True")."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ScoringError(f"the prediction for id {qid!r} is {value!r} (a {type(value).__name__}); a prediction "
                           "must be a string (write it in quotes).")
    return value


def _eval_dict(exact: Mapping[Hashable, int], f1: Mapping[Hashable, float],
               qid_list: Sequence[Hashable] | None = None) -> dict[str, Any]:
    """The official v2.0 `make_eval_dict` (same summation order)."""
    if not qid_list:
        total = len(exact)
        if total == 0:
            return {"exact": 0.0, "f1": 0.0, "total": 0}
        return {"exact": 100.0 * sum(exact.values()) / total, "f1": 100.0 * sum(f1.values()) / total,
                "total": total}
    total = len(qid_list)
    return {"exact": 100.0 * sum(exact[k] for k in qid_list) / total,
            "f1": 100.0 * sum(f1[k] for k in qid_list) / total, "total": total}


def _missing(examples: list[tuple[Hashable, Sequence[str]]], predictions: Mapping[Hashable, Any]) -> int:
    """How many questions lack a prediction (each scores 0); said once on stderr."""
    missing = [qid for qid, _ in examples if qid not in predictions]
    if missing:
        shown = ", ".join(str(q) for q in missing[:3])
        print(f"{len(missing)} of {len(examples)} questions have no prediction (e.g. {shown}); each scores 0.",
              file=sys.stderr)
    return len(missing)


def _squad_v2_scores(examples: list[tuple[Hashable, Sequence[str]]], predictions: Mapping[Hashable, Any],
                     lang: str) -> dict[str, Any]:
    qid_to_has_ans = {}
    for qid, golds in examples:
        qid_to_has_ans[qid] = bool(golds)
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_scores: dict[Hashable, int] = {}
    f1_scores: dict[Hashable, float] = {}
    for qid, golds in examples:
        gold_answers = [a for a in golds if normalize_answer(a, lang)]
        if not gold_answers:
            # For unanswerable questions, only correct answer is empty string
            gold_answers = [""]
        if qid not in predictions:
            exact_scores[qid], f1_scores[qid] = 0, 0  # the official v2.0 script skips it (module docstring)
            continue
        a_pred = _as_text(predictions[qid], qid)
        exact_scores[qid] = max(exact_match_score(a_pred, a, lang) for a in gold_answers)
        f1_scores[qid] = max(f1_score(a_pred, a, lang, version=2) for a in gold_answers)
    out = _eval_dict(exact_scores, f1_scores)
    for prefix, qids in (("HasAns", has_ans_qids), ("NoAns", no_ans_qids)):
        if qids:
            for key, value in _eval_dict(exact_scores, f1_scores, qids).items():
                out[f"{prefix}_{key}"] = value
    return out


def _squad_v1_scores(examples: list[tuple[Hashable, Sequence[str]]], predictions: Mapping[Hashable, Any],
                     lang: str) -> dict[str, float]:
    f1 = exact_match = total = 0
    for qid, golds in examples:
        total += 1
        if qid not in predictions:
            continue  # scores 0, as in the official v1.1 script
        ground_truths = list(golds) or [""]
        prediction = _as_text(predictions[qid], qid)
        exact_match += max(exact_match_score(prediction, gt, lang) for gt in ground_truths)
        f1 += max(f1_score(prediction, gt, lang, version=1) for gt in ground_truths)
    if total == 0:
        return {"exact_match": 0.0, "f1": 0.0}
    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total
    return {"exact_match": exact_match, "f1": f1}


def squad_scores(examples: Iterable[tuple[Hashable, Sequence[str]]], predictions: Mapping[Hashable, Any],
                 lang: str = "en", version: Literal[1, 2] = 2) -> dict[str, Any]:
    """SQuAD EM/F1 over `(qid, gold_texts)` pairs in dataset order; an empty gold list means unanswerable.

    `version=2` returns the official v2.0 dict (`exact, f1, total, HasAns_*, NoAns_*`), `version=1` the v1.1 one
    (`exact_match, f1`). A question without a prediction scores 0 under both versions (module docstring).
    """
    _check_lang(lang)
    if version not in (1, 2):
        raise ValueError(f"Unknown SQuAD version {version!r}; use 1 or 2.")
    examples = list(examples)
    _missing(examples, predictions)
    if version == 2:
        return _squad_v2_scores(examples, predictions, lang)
    return _squad_v1_scores(examples, predictions, lang)


_CHOICE_LEAD = re.compile(r"^\(?([A-Z])\s*[.):：]")


def normalize_choice(value: Any) -> str | None:
    """Comparison key of an MCQ answer: `" b. "`, `"(B)"`, `"B) Paris"` -> `"B"`; None/blank -> None."""
    if value is None:
        return None
    text = unicodedata.normalize("NFC", str(value)).strip()
    if not text:
        return None
    bare = text.strip("().:：。 ").strip()
    if len(bare) == 1:
        return bare.upper()
    lead = _CHOICE_LEAD.match(text)
    if lead:
        return lead.group(1)
    return " ".join(bare.split()).casefold()


def mcq_accuracy(golds: Sequence[Any], preds: Sequence[Any], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy (a fraction) of MCQ answers; `invalid` counts predictions that are None or blank (scored wrong), and,
    when the option `labels` are given, predictions that are not one of them."""
    if len(golds) != len(preds):
        raise ValueError(f"mcq_accuracy: {len(golds)} gold answers but {len(preds)} predictions.")
    valid = None if labels is None else {normalize_choice(lab) for lab in labels}
    correct = invalid = 0
    for gold, pred in zip(golds, preds, strict=True):
        p = normalize_choice(pred)
        if p is None or (valid is not None and p not in valid):
            invalid += 1
        elif p == normalize_choice(gold):
            correct += 1
    total = len(golds)
    return {"accuracy": correct / total if total else 0.0, "correct": correct, "total": total, "invalid": invalid}


#: two options at least this word-F1-similar (under the metric language) are near-duplicates
NEAR_DUPLICATE_F1 = 0.8


def mcq_generation_quality(outputs: Sequence[Any], contexts: Sequence[str] | None = None, lang: str = "en",
                           **parse_kwargs: Any) -> dict[str, Any]:
    """Share of generated texts that follow the MCQ layout; `failures` counts outputs per failure code.

    Over the valid ones, what the layout does not see: `nested_options` counts MCQs with one option's text inside
    another's (the near-copies a model writes instead of distractors, and what layout-constrained decoding falls back
    to when it may not repeat a line; 5 of the 592 human-written VNHSGE questions have one), `near_duplicate_options`
    those with two options of word F1 >= `NEAR_DUPLICATE_F1` (`người tiêu dùng` / `của người tiêu dùng`: not nested,
    no better as distractors; 10 of 200 held-out VNHSGE questions), and, when `contexts` are given (one per output),
    `key_in_context` counts MCQs whose keyed option occurs in the context (normalised under `lang`): an answer
    grounded in the text. `usable`: valid, no option inside another, the key in the context (a question a teacher
    could keep as written); `usable_distinct`: usable and no near-duplicate pair either."""
    if contexts is not None and len(contexts) != len(outputs):
        raise ValueError(f"mcq_generation_quality: {len(contexts)} contexts for {len(outputs)} outputs.")
    failures: collections.Counter[str] = collections.Counter()
    valid = nested = near = grounded = usable = distinct = 0
    for i, text in enumerate(outputs):
        parsed = parse_mcq(_as_text(text, f"#{i}"), **parse_kwargs)
        failures.update(set(parsed.errors))
        if not parsed.ok:
            continue
        valid += 1
        keys = [option_key(o) for o in parsed.options]
        inside = any(a != b and a in b for a in keys for b in keys)
        nested += inside
        close = any(f1_score(a, b, lang) >= NEAR_DUPLICATE_F1 for j, a in enumerate(parsed.options)
                    for b in parsed.options[j + 1:])
        near += close
        if contexts is not None and parsed.answer_index is not None:
            key = normalize_answer(parsed.options[parsed.answer_index], lang)
            found = key in normalize_answer(contexts[i], lang)
            grounded += found
            usable += found and not inside
            distinct += found and not inside and not close
    total = len(outputs)
    ordered = {code: failures[code] for code in FAILURE_CODES if failures[code]}
    out = {"total": total, "valid": valid, "valid_rate": valid / total if total else 0.0, "failures": ordered,
           "nested_options": nested, "near_duplicate_options": near}
    if contexts is not None:
        out["key_in_context"] = grounded
        out["usable"], out["usable_rate"] = usable, usable / total if total else 0.0
        out["usable_distinct"], out["usable_distinct_rate"] = distinct, distinct / total if total else 0.0
    return out
