"""The QA tasks: extractive span QA, abstractive QA, multiple choice (MCQ) and MCQ generation.

Each is a `genqa.data.task.Task`: it maps source rows onto the canonical schema, builds the prompt and the target,
reads a model's answer back and names its metric. `get_task` picks the one a recipe's `task:` names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from genqa.backbones import PredictSettings
from genqa.config import OPTION_TEXT_MODES, QAArguments
from genqa.data.answers import gold_answers, locate_answer, map_to_context, nearest_span
from genqa.data.mcq_format import MCQLayout, format_mcq, label_alternation, layout_problems
from genqa.data.task import CANONICAL_COLUMNS, CANONICAL_FEATURES, Decoding, GroundedLayout, SpanOfContext, Task, _text
from genqa.errors import DataError

__all__ = ["CANONICAL_COLUMNS", "CANONICAL_FEATURES", "AbstractiveTask", "Decoding", "ExtractiveTask",
           "MCQGenerationTask", "MCQTask", "SpanOfContext", "Task", "get_task", "split_options"]


def _is_no_answer(text: str, no_answer_text: str) -> bool:
    norm = re.sub(r"[\W_]+", " ", text, flags=re.UNICODE).strip().lower()
    return norm == re.sub(r"[\W_]+", " ", no_answer_text, flags=re.UNICODE).strip().lower()


@dataclass
class ExtractiveTask(Task):
    """Span QA (SQuAD 1.1/2.0, UIT-ViQuAD): the answer is a span of the context, or the no-answer string."""

    name: str = "extractive"
    answers_are_spans: bool = True
    max_new_tokens: int = 48

    def __post_init__(self) -> None:
        self.default_instruction = ("Answer the question with a short span copied from the context. If the context "
                                    f"does not contain the answer, reply \"{self.args.no_answer_text}\".")

    def fill(self, ex, row, where, has_answer):
        if not has_answer:
            return
        texts, starts = gold_answers(row, self.args, where)
        fixed_texts, fixed_starts = [], []
        for i, text in enumerate(texts):
            span = locate_answer(text, starts[i] if i < len(starts) else -1, ex["context"], where)
            fixed_texts.append(ex["context"][span[0]:span[1]])
            fixed_starts.append(span[0])
        ex["answers"], ex["answer_starts"] = fixed_texts, fixed_starts

    def target(self, ex):
        return ex["answers"][0] if ex["answers"] else self.args.no_answer_text

    def parse(self, text):
        text = text.strip()
        return "" if _is_no_answer(text, self.args.no_answer_text) else text

    def gold(self, ex):
        return list(ex["answers"])

    def recipe_problems(self):
        problems = []
        if not (self.args.context_column and self.args.question_column):
            problems.append(f"task {self.name} needs `context_column` and `question_column`.")
        if self.args.nearest_span and self.args.constrain_to_context:
            problems.append("`nearest_span: true` reads free answers back as spans; with `constrain_to_context: true` "
                            "every answer already is one. Set `constrain_to_context: false` beside it (or drop "
                            "`nearest_span`).")
        return problems

    def decoding(self, settings: PredictSettings, mcq_mode: str | None = None) -> Decoding:
        """Generated spans of the context under `constrain_to_context`; with `no_answer_threshold`, the best span
        (the no-answer text not allowed) scored against the no-answer text."""
        null, threshold = self.args.no_answer_text, settings.no_answer_threshold
        constraint = SpanOfContext(None if threshold is not None else null) if settings.constrain_to_context else None
        return Decoding(constraint=constraint, no_answer_threshold=threshold, no_answer_text=null)

    def read_answer(self, row, raw, how):
        """A span from an encoder's span head is the answer; generated text is mapped onto the context."""
        if how == "span":
            return raw, how if raw else "no_answer"
        answer = self.parse(raw)
        if not answer:
            return "", "no_answer"
        span, how = map_to_context(answer, row["context"])
        if how == "not_in_context" and self.args.nearest_span:
            return nearest_span(answer, row["context"]), "nearest"
        return span, how


@dataclass
class AbstractiveTask(ExtractiveTask):
    """Free-text answers (T5-style abstractive QA); the context is optional."""

    name: str = "abstractive"
    answers_are_spans: bool = False
    max_new_tokens: int = 64

    def __post_init__(self) -> None:
        self.default_instruction = ("Answer the question. If it cannot be answered, reply "
                                    f"\"{self.args.no_answer_text}\".")
        if not self.args.context_column:
            self.default_prompt_format = "{instruction}\n\nQuestion: {question}"

    def recipe_problems(self):
        return []  # the context is optional

    def decoding(self, settings: PredictSettings, mcq_mode: str | None = None) -> Decoding:
        """Free generation: an abstractive answer need not be a span."""
        return Decoding()

    def read_answer(self, row, raw, how):
        """Free text; the no-answer text reads back as ""."""
        answer = self.parse(raw)
        return answer, how if answer else "no_answer"

    def fill(self, ex, row, where, has_answer):
        if not has_answer:
            return
        value = row[self.args.answer_column]
        if isinstance(value, dict):
            value = value.get("text", [])
        texts = [_text(t) for t in value] if isinstance(value, (list, tuple)) else [_text(value)]
        ex["answers"] = [t for t in texts if t.strip()]


def _options_from_row(args: QAArguments, row: dict[str, Any], where: str) -> list[str]:
    """The options of an MCQ row. Empty cells at the end are dropped (a row with fewer options than columns); an empty
    option before a filled one is a `DataError` naming it (it would train on an empty option)."""
    if args.options_column:
        value = row[args.options_column]
        if not isinstance(value, (list, tuple)):
            raise DataError(f"{where}: `{args.options_column}` must hold a list of options, got "
                            f"{type(value).__name__}.")
        options = [_text(o) for o in value]
    else:
        options = [_text(row[c]) for c in args.options_columns or []]
    while options and not options[-1].strip():
        options.pop()
    empty = [args.option_labels[i] if i < len(args.option_labels) else str(i + 1)
             for i, o in enumerate(options) if not o.strip()]
    if empty:
        raise DataError(f"{where}: option {', '.join(empty)} is empty; fill it in or drop the row.")
    return options


def split_options(text: str, labels: list[str], where: str) -> tuple[str, list[str]]:
    """Split `question\nA. opt\nB. opt ...` into the question and its options (labels in order)."""
    alternation = label_alternation(labels)
    # an option marker starts a line or follows a tab / a run of spaces: "\nA. ...", "\tB. ..."
    parts = re.split(rf"(?:^|\n|\t| {{2,}})[ \t]*({alternation})[ \t]*[.):][ \t]*", text)
    found = parts[1::2]
    by_label = dict(zip(found, (p.strip() for p in parts[2::2]), strict=True))
    if len(by_label) != len(found) or sorted(found) != sorted(labels):
        raise DataError(f"{where}: could not find options {', '.join(labels)} as lines `A. ...` in the question.")
    return parts[0].strip(), [by_label[lab] for lab in labels]


@dataclass
class OptionRows(Task):
    """What the two multiple-choice tasks share: rows with options (`A`–`D` or `1`–`4`) and an answer key."""

    def __post_init__(self) -> None:
        if not (self.args.options_columns or self.args.options_column or self.args.options_in_question):
            raise DataError(f"task {self.name}: set `options_columns` (one column per option), `options_column` "
                            "(one column holding a list of options) or `options_in_question: true`.")
        if self.args.options_columns and len(self.args.options_columns) > len(self.args.option_labels):
            raise DataError(f"options_columns has {len(self.args.options_columns)} columns but option_labels only "
                            f"{len(self.args.option_labels)} labels; add labels.")

    def label_index(self, value: Any, options: list[str], where: str) -> int:
        """Index of the gold answer given as a label, a 1-based option number or the option's text."""
        text = _text(value).strip()
        labels = self.args.option_labels
        cleaned = text.rstrip(".)").strip()
        for i, lab in enumerate(labels[:len(options)]):
            if cleaned.lower() == lab.lower():
                return i
        if cleaned.isascii() and cleaned.isdigit() and 1 <= int(cleaned) <= len(options):  # not "④"
            return int(cleaned) - 1
        if text in options:
            return options.index(text)
        columns = self.args.options_columns or []
        if text in columns[:len(options)]:  # the answer names the option's column (`選項1`)
            return columns.index(text)
        raise DataError(f"{where}: answer {text!r} is neither a label ({', '.join(labels[:len(options)])}), an option "
                        "number, nor the text of an option. Fix the row or set `option_labels`.")

    def fill(self, ex, row, where, has_answer):
        if self.args.options_in_question:
            ex["question"], options = split_options(ex["question"], self.args.option_labels, where)
        else:
            options = _options_from_row(self.args, row, where)
        if len(options) > len(self.args.option_labels):
            raise DataError(f"{where}: {len(options)} options but only {len(self.args.option_labels)} option_labels.")
        if len(options) < 2:
            raise DataError(f"{where}: a multiple-choice row needs at least 2 options, got {len(options)}.")
        ex["options"] = options
        if has_answer and _text(row.get(self.args.answer_column)).strip():
            ex["label"] = self.label_index(row[self.args.answer_column], options, where)

    def format_options(self, options: list[str]) -> str:
        """Options as `A. text` lines."""
        return "\n".join(f"{lab}. {opt}" for lab, opt in zip(self.args.option_labels, options, strict=False))

    def prompt_fields(self, ex):
        return {**super().prompt_fields(ex), "options": self.format_options(ex["options"])}

    def labels_for(self, ex: dict[str, Any]) -> list[str]:
        """The valid labels of a row (rows may have fewer options than labels)."""
        return list(self.args.option_labels[:len(ex["options"])])

    def recipe_problems(self):
        if self.args.options_columns and not self.args.answer_column:
            return [f"task {self.name} needs `answer_column` for training."]
        return []


@dataclass
class MCQTask(OptionRows):
    """Multiple-choice reading comprehension: options → the label of the right one (`A`–`D` or `1`–`4`)."""

    name: str = "mcq"
    default_prompt_format: str = "{instruction}\n\nContext: {context}\n\nQuestion: {question}\n\nOptions:\n{options}"
    metric: str = "accuracy"
    scores_labels: bool = True
    max_new_tokens: int = 8

    def __post_init__(self) -> None:
        super().__post_init__()
        labels = ", ".join(self.args.option_labels)
        self.default_instruction = ("Read the context and answer the multiple-choice question with the label of the "
                                    f"correct option ({labels}) only.")
        if self.answers_with_text:  # the model answers with the option's text (`mcq_mode: options`)
            self.default_instruction = ("Read the context and answer the multiple-choice question with the text of "
                                        "the correct option only.")

    def input_columns(self):
        extra = self.args.options_columns or [self.args.options_column]
        return super().input_columns() + [c for c in extra if c and not self.args.options_in_question]

    @property
    def answers_with_text(self) -> bool:
        """The recipe's `mcq_mode` scores the options' texts, so the model is trained to answer with the text."""
        return self.args.mcq_mode in OPTION_TEXT_MODES

    def target(self, ex):
        if ex["label"] < 0:
            raise DataError(f"row {ex['id']}: no gold answer to train on.")
        return ex["options"][ex["label"]] if self.answers_with_text else self.args.option_labels[ex["label"]]

    def gold(self, ex):
        return self.args.option_labels[ex["label"]]

    def option_candidates(self, ex: dict[str, Any]) -> list[tuple[str, str]]:
        """(label, option text) of every option of a row: what `mcq_mode: options` scores as the model's answer."""
        return list(zip(self.labels_for(ex), ex["options"], strict=False))

    def parse(self, text, ex: dict[str, Any] | None = None):
        labels = self.labels_for(ex) if ex else list(self.args.option_labels)
        text = text.strip()
        if not text:
            return None
        if ex and self.answers_with_text and text in [o.strip() for o in ex["options"]]:  # trained to answer so
            return labels[[o.strip() for o in ex["options"]].index(text)]
        alternation = label_alternation(labels)
        # 1. the answer starts with a label: "B", "(b)", "B. Paris" (any case only here)
        m = re.match(rf"^[\s(\[*]*({alternation})(?![A-Za-z0-9])", text, flags=re.IGNORECASE)
        if m is None:  # 2. a label as written, not inside an ASCII word: "so B", "答案是2", "Đáp án: C" (not "a dog")
            m = re.search(rf"(?<![A-Za-z0-9])({alternation})(?![A-Za-z0-9])", text)
        if m:
            hit = m.group(1).lower()
            return next(lab for lab in labels if lab.lower() == hit)
        if ex:
            for lab, opt in zip(labels, ex["options"], strict=False):
                if opt and opt.strip() and opt.strip() in text:
                    return lab
        return None

    def decoding(self, settings: PredictSettings, mcq_mode: str | None = None) -> Decoding:
        """`mcq_mode` (None: the recipe's) `score`: the valid labels scored in one forward pass; `options` /
        `options_sum`: each option's text scored as the answer (per character / summed); `generate`: free text,
        parsed."""
        mode = mcq_mode or self.args.mcq_mode
        if mode == "score":
            return Decoding(mode="score_labels", labels_of=self.labels_for)
        if mode in OPTION_TEXT_MODES:
            return Decoding(mode="score_texts", candidates_of=self.option_candidates, per_char=mode == "options")
        return Decoding()

    def read_answer(self, row, raw, how):
        """A scored label is the answer; generated text is parsed into a label (None: unparseable)."""
        answer = raw if how in ("label_score", "option_score") else self.parse(raw, row)
        return answer, how if answer else "unparseable"

    def has_gold(self, rows):
        return any(r["label"] >= 0 for r in rows)

    def is_valid_answer(self, answer):
        return answer in self.args.option_labels

    def recipe_warnings(self) -> list[str]:
        """The instruction names answer labels of another kind than `option_labels` (`1-4` for labels A-D): the
        model is told one thing and trained on another."""
        labels, text = self.args.option_labels, self.instruction
        named = [kind for kind in LABEL_KINDS if labels[0] not in kind and _names_labels(text, kind[:len(labels)])]
        if not named:
            return []
        return [f"the instruction names the labels {', '.join(named[0][:len(labels)])} but `option_labels` is "
                f"{', '.join(labels)}: the model is trained to answer {labels[0]}... Rewrite `instruction` to name "
                f"{', '.join(labels)} (instruction: {text[:80]!r})."]


#: kinds of option labels an instruction may name
LABEL_KINDS = ("123456789", "ABCDEFGHI")


def _names_labels(text: str, labels: str) -> bool:
    """Whether `text` names these labels: a range (`1-4`, `A–D`, `1到4`) or the first two as a list (`1、2`, `A, B`)."""
    first, second, last = re.escape(labels[0]), re.escape(labels[1]), re.escape(labels[-1])
    before, after = r"(?<![A-Za-z0-9])", r"(?![A-Za-z0-9])"
    pattern = (rf"{before}{first}\s*(?:-|–|—|~|到|至|to)\s*{last}{after}|"
               rf"{before}{first}\s*[,、，/;]?\s*(?:or|和|或)?\s*{second}{after}")
    return re.search(pattern, text) is not None


@dataclass
class MCQGenerationTask(OptionRows):
    """MCQ generation: context → question, options and answer key, in `genqa.data.mcq_format`'s fixed layout."""

    name: str = "mcq_generation"
    default_prompt_format: str = "{instruction}\n\nContext: {context}"
    metric: str = "mcq_layout"
    max_new_tokens: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        n = len(self.args.options_columns or self.args.option_labels)
        self.default_instruction = (f"Write one multiple-choice question about the context, with {n} different "
                                    "options and the answer key.")

    def input_columns(self):
        return [self.args.context_column] if self.args.context_column else []

    def answer_columns(self):
        cols = [self.args.question_column, *(self.args.options_columns or [self.args.options_column]),
                self.args.answer_column]
        return [c for c in cols if c]

    def fill(self, ex, row, where, has_answer):
        if has_answer:
            super().fill(ex, row, where, has_answer)
            labels = list(self.args.option_labels)  # as `target` writes them
            problems = layout_problems(ex["question"], ex["options"], labels)
            if ex["label"] < 0:
                problems.append("it has no answer key")
            if problems:
                raise DataError(f"{where}: {'; '.join(problems)}; MCQ generation trains on a question with "
                                f"{len(labels)} distinct, non-empty options and a key (genqa.data.mcq_format).")

    def target(self, ex):
        return format_mcq(ex["question"], list(ex["options"]), ex["label"], labels=list(self.args.option_labels),
                          question_prefix=self.args.mcq_question_prefix, answer_prefix=self.args.mcq_answer_prefix)

    def layout(self) -> MCQLayout:
        """The layout `target` writes, which layout-constrained decoding holds generated text to."""
        return MCQLayout(tuple(self.args.option_labels), self.args.mcq_question_prefix, self.args.mcq_answer_prefix)

    def recipe_problems(self):
        problems = super().recipe_problems()
        if self.args.key_from_context and not (self.args.constrain_to_layout and self.args.context_column):
            problems.append("`key_from_context: true` holds the key of layout-constrained decoding to an option the "
                            "context contains: it needs `constrain_to_layout: true` and a `context_column`.")
        return problems

    def decoding(self, settings: PredictSettings, mcq_mode: str | None = None) -> Decoding:
        """Generated text, held to `layout()` under `constrain_to_layout` (and to the context: `key_from_context`)."""
        if settings.key_from_context and not settings.constrain_to_layout:
            raise DataError("`key_from_context` holds the key of layout-constrained decoding: use it with "
                            "`constrain_to_layout: true`, or drop it.")
        layout = self.layout() if settings.constrain_to_layout else None
        grounded = layout is not None and settings.key_from_context
        return Decoding(constraint=GroundedLayout(layout, self.args.metric_lang) if grounded else layout)

    def read_answer(self, row, raw, how):
        return raw.strip(), how

    def has_gold(self, rows):
        return True  # the metric checks the generated questions' structure: no gold needed


TASK_CLASSES: dict[str, type[Task]] = {
    "extractive": ExtractiveTask, "mcq": MCQTask, "mcq_generation": MCQGenerationTask, "abstractive": AbstractiveTask,
}


def get_task(args: QAArguments) -> Task:
    """The task object named by `args.task`."""
    return TASK_CLASSES[args.task](args)
