"""The fixed, parseable layout of MCQ *generation* outputs (context -> question + four options + answer key).

A generated MCQ is written as::

    Question: What is ...?
    A. first option
    B. second option
    C. third option
    D. fourth option
    Answer: B

`format_mcq` writes it (training targets), `parse_mcq` reads it back (evaluation of generated text). Prefixes are
parameters: Vietnamese recipes use `Câu hỏi:` / `Đáp án:` (see `PREFIXES`).

`parse_mcq` tolerates extra whitespace, CRLF line ends, `A.` / `A)` / `A:` / `(A)` option markers, a full-width
colon in the prefixes, a trailing period or the option text after the key (`Đáp án: B.`, `Answer: B. Paris`),
preamble lines before the question and trailing text after the key. Structural failures are reported as short,
stable codes (the `*_` constants below), never as exceptions. One layout failure is checked inside option text:
an option line that goes on with further labelled options (`B. x. C. y. D. z.`, `INLINE_OPTIONS`) holds several
options on one line, however distinct it looks; a label (or the letter after the last one) is taken as such a
marker only at the start of the text or after `.` `;` `:` `?` `!`, and before a space or the end (none of the 592
VNHSGE targets has one; their `anh D.` names do not).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_LABELS: tuple[str, ...] = ("A", "B", "C", "D")
DEFAULT_QUESTION_PREFIX = "Question:"
DEFAULT_ANSWER_PREFIX = "Answer:"
#: Question / answer prefixes per language; `en` is the default of `format_mcq` and `parse_mcq`.
PREFIXES: dict[str, tuple[str, str]] = {
    "en": (DEFAULT_QUESTION_PREFIX, DEFAULT_ANSWER_PREFIX),
    "vi": ("Câu hỏi:", "Đáp án:"),
}

MISSING_QUESTION = "missing_question"
WRONG_OPTION_COUNT = "wrong_option_count"
EMPTY_OPTION = "empty_option"
DUPLICATE_OPTIONS = "duplicate_options"
INLINE_OPTIONS = "inline_options"
MISSING_KEY = "missing_key"
KEY_NOT_AN_OPTION = "key_not_an_option"
#: Every failure code `parse_mcq` can report, in the order it reports them.
FAILURE_CODES: tuple[str, ...] = (
    MISSING_QUESTION, WRONG_OPTION_COUNT, EMPTY_OPTION, DUPLICATE_OPTIONS, INLINE_OPTIONS, MISSING_KEY,
    KEY_NOT_AN_OPTION,
)


@dataclass(frozen=True)
class MCQLayout:
    """The layout of one MCQ: option labels and the question / answer-key line prefixes (what `format_mcq` writes
    and `parse_mcq` reads with; `genqa.backbones.mcq_constraint` holds generated text to it)."""

    labels: tuple[str, ...] = DEFAULT_LABELS
    question_prefix: str = DEFAULT_QUESTION_PREFIX
    answer_prefix: str = DEFAULT_ANSWER_PREFIX


def _one_line(text: str) -> str:
    """Collapse every run of whitespace (newlines included) to one space."""
    return " ".join(str(text).split())


@functools.lru_cache(maxsize=32)
def inline_marker(labels: tuple[str, ...]) -> re.Pattern[str]:
    """Regex finding an option marker inside option text (`x. C. y`, `x. C.` at the end, `B. y` at the start): the
    text holds further options written inline (`INLINE_OPTIONS`). The letter after the last label counts too (a
    model that runs on past `D.` writes `E.`)."""
    markers = list(labels)
    if labels and len(labels[-1]) == 1 and "A" <= labels[-1] < "Z":
        markers.append(chr(ord(labels[-1]) + 1))
    return re.compile(r"(?:^|[.;:?!]\s*)(?:" + label_alternation(markers) + r")[.)](?:\s|$)")


def layout_problems(question: str, options: Sequence[str], labels: Sequence[str] = DEFAULT_LABELS) -> list[str]:
    """What keeps a question and its options from a layout `parse_mcq` reads back unchanged: an empty question, the
    wrong number of options, an empty option, options equal up to case / spacing / a final period (the parser's
    `DUPLICATE_OPTIONS`). Empty when `format_mcq` can write them. The training data check and the writer share it,
    so that every target written is one the parser accepts."""
    problems = []
    if not _one_line(question):
        problems.append("the question is empty")
    if len(options) != len(labels):
        problems.append(f"{len(options)} options for {len(labels)} labels {list(labels)}")
    opts = [_one_line(o) for o in options]
    empty = [lab for lab, o in zip(labels, opts, strict=False) if not o]
    if empty:
        problems.append(f"option {', '.join(empty)} is empty")
    keys = [option_key(o) for o in opts if o]
    if len(set(keys)) != len(keys):
        problems.append("two options are the same up to case, spacing or a final period")
    marker = inline_marker(tuple(labels))
    inline = [lab for lab, o in zip(labels, opts, strict=False) if marker.search(o)]
    if inline:
        problems.append(f"option {', '.join(inline)} holds another option's label (`. C.`), as if options were "
                        "written on one line")
    return problems


def format_mcq(
    question: str,
    options: Sequence[str],
    answer_index: int,
    labels: Sequence[str] = DEFAULT_LABELS,
    question_prefix: str = DEFAULT_QUESTION_PREFIX,
    answer_prefix: str = DEFAULT_ANSWER_PREFIX,
) -> str:
    """Write one MCQ in the fixed layout; the question and each option go on one line (inner whitespace collapsed).
    Raises ValueError for what `layout_problems` reports or a key outside the labels."""
    labels = list(labels)
    problems = layout_problems(question, options, labels)
    if problems:
        raise ValueError(f"format_mcq: {'; '.join(problems)}.")
    if not 0 <= answer_index < len(labels):
        raise ValueError(f"format_mcq: answer_index {answer_index} is outside 0..{len(labels) - 1}.")
    lines = [f"{question_prefix} {_one_line(question)}"]
    lines += [f"{label}. {_one_line(opt)}" for label, opt in zip(labels, options, strict=True)]
    lines.append(f"{answer_prefix} {labels[answer_index]}")
    return "\n".join(lines)


@dataclass
class ParsedMCQ:
    """What `parse_mcq` read: question, options in label order, the key, and failure codes (empty when valid)."""

    question: str
    options: list[str]
    answer_label: str | None
    answer_index: int | None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the text had the full layout (no failure codes)."""
        return not self.errors


def _prefix_regex(prefix: str) -> re.Pattern[str]:
    """Case-insensitive regex for a line starting with `prefix` (flexible spaces, `:` or `：`); group 1 = rest."""
    prefix = unicodedata.normalize("NFC", prefix.strip())
    parts = []
    for ch in prefix:
        if ch.isspace():
            parts.append(r"\s+")
        elif ch in ":：":
            parts.append(r"\s*[:：]")
        else:
            parts.append(re.escape(ch))
    return re.compile(r"^" + "".join(parts) + r"\s*(.*)$", re.IGNORECASE | re.DOTALL)


def label_alternation(labels: Sequence[str]) -> str:
    """Regex alternation of the labels, longest first."""
    return "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))


def option_key(text: str) -> str:
    """Comparison key for duplicate detection: NFC, casefolded, whitespace collapsed, trailing period dropped."""
    return _one_line(unicodedata.normalize("NFC", text)).casefold().rstrip(".").strip()


def _parse_key(value: str, labels: Sequence[str], alternation: str) -> tuple[str | None, bool]:
    """The label named by an answer-key value; returns (label, present) where present means a non-empty value."""
    value = value.strip().strip("*").strip()
    if not value:
        return None, False
    bare = value.strip("().:：。* ").strip().casefold()
    for label in labels:
        if bare == label.casefold():
            return label, True
    lead = re.match(r"^\(?\s*(" + alternation + r")\s*(?:[.):]|(?=\s)|$)", value)
    if lead:
        return lead.group(1), True
    return None, True


def _split_lines(text: str, q_re: re.Pattern[str], a_re: re.Pattern[str], opt_re: re.Pattern[str],
                 extra_re: re.Pattern[str]) -> tuple[list[str] | None, list[tuple[str, list[str]]], str | None]:
    """(question lines, [(label, option lines)], answer-key value) of a generated MCQ's lines."""
    question_lines: list[str] | None = None
    options: list[tuple[str, list[str]]] = []
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if question_lines is None and not options and (m := q_re.match(line)):
            question_lines = [m.group(1).strip()]
        elif m := a_re.match(line):
            return question_lines, options, m.group(1)
        elif (m := opt_re.match(line)) or (options and (m := extra_re.match(line))):
            options.append((m.group(1) or m.group(2), [m.group(3).strip()]))
        elif options:
            options[-1][1].append(line)  # a wrapped option line
        elif question_lines is not None:
            question_lines.append(line)  # a multi-line question
        # lines before the question prefix are preamble and ignored
    return question_lines, options, None


def _option_errors(options: list[tuple[str, list[str]]], labels: list[str]) -> tuple[dict[str, str], list[str],
                                                                                     list[str]]:
    """(options by label, option texts in order, failure codes) of the parsed option lines."""
    errors: list[str] = []
    by_label = {label: " ".join(x for x in parts if x).strip() for label, parts in options}
    if len(options) != len(labels) or set(by_label) != set(labels):
        errors.append(WRONG_OPTION_COUNT)
        option_texts = [" ".join(x for x in parts if x).strip() for _, parts in options]
    else:
        option_texts = [by_label[label] for label in labels]
    if any(not o for o in option_texts):
        errors.append(EMPTY_OPTION)
    keys = [option_key(o) for o in option_texts if o]
    if len(set(keys)) != len(keys):
        errors.append(DUPLICATE_OPTIONS)
    marker = inline_marker(tuple(labels))
    if any(marker.search(o) for o in option_texts):
        errors.append(INLINE_OPTIONS)
    return by_label, option_texts, errors


def parse_mcq(
    text: str,
    labels: Sequence[str] = DEFAULT_LABELS,
    question_prefix: str = DEFAULT_QUESTION_PREFIX,
    answer_prefix: str = DEFAULT_ANSWER_PREFIX,
) -> ParsedMCQ:
    """Read a generated MCQ back; never raises on malformed text, reports failure codes in `errors` instead."""
    labels = list(labels)
    text = unicodedata.normalize("NFC", str(text or "")).replace("\r\n", "\n").replace("\r", "\n")
    alternation = label_alternation(labels)
    opt_re = re.compile(r"^(?:\(\s*(" + alternation + r")\s*\)|(" + alternation + r")\s*[.):：])\s*(.*)$")
    extra_re = re.compile(r"^(?:\(\s*([A-Z])\s*\)|([A-Z])\s*[.):：])\s*(.*)$")  # an option beyond `labels`
    question_lines, options, key_value = _split_lines(text, _prefix_regex(question_prefix),
                                                      _prefix_regex(answer_prefix), opt_re, extra_re)
    question = " ".join(x for x in (question_lines or []) if x).strip()
    errors = [] if question else [MISSING_QUESTION]
    by_label, option_texts, option_errors = _option_errors(options, labels)
    errors += option_errors

    answer_label: str | None = None
    answer_index: int | None = None
    label, present = _parse_key(key_value, labels, alternation) if key_value is not None else (None, False)
    if not present:
        errors.append(MISSING_KEY)
    elif label is None or label not in by_label:
        errors.append(KEY_NOT_AN_OPTION)
    else:
        answer_label = label
        answer_index = labels.index(label)
    return ParsedMCQ(question, option_texts, answer_label, answer_index, errors)
