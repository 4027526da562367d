"""The task interface: map a source row onto one schema, build the prompt and the target, read an answer back.

Every task works on the same canonical row (`CANONICAL_COLUMNS`), so templates, trainers, generation, metrics and
submissions never look at a source's own column names. What differs between tasks lives on the task object: how a
model's output is read back (`read_answer`), which metric scores it (`metric`, a key of
`genqa.scoring.task_metrics.METRICS`), how prediction decodes its answers (`decoding`: free or constrained
generation, label scoring), what a valid submission answer is and how long an answer may run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from datasets import Dataset, Features, Sequence, Value

from genqa.backbones import PredictSettings
from genqa.config import QAArguments, prompt_format_problem
from genqa.errors import DataError
from genqa.messages import say

CANONICAL_FEATURES = Features({
    "id": Value("string"),
    "context": Value("string"),
    "question": Value("string"),
    "options": Sequence(Value("string")),
    "answers": Sequence(Value("string")),
    "answer_starts": Sequence(Value("int64")),
    "label": Value("int64"),
})
CANONICAL_COLUMNS = list(CANONICAL_FEATURES)


@dataclass(frozen=True)
class SpanOfContext:
    """A decoding constraint: every generated answer is a span of its row's context, or `no_answer_text` (None: spans
    only). `genqa.backbones.generation` holds generation to it (`genqa.backbones.span_constraint`)."""

    no_answer_text: str | None = None


@dataclass(frozen=True)
class GroundedLayout:
    """A decoding constraint: every generated text is one MCQ in `layout`, and its key names an option that occurs in
    the row's context (normalised under `lang`, as the metric's `key_in_context`); one option per row is held to the
    context's words where the model grounded none before it (`genqa.backbones.mcq_constraint`)."""

    layout: Any
    lang: str = "en"


@dataclass
class Decoding:
    """How prediction decodes a task's answers, as the task hands it over (`Task.decoding`): the backbone's
    generation loop reads these fields and knows no task by name."""

    #: `generate`: generated text, read back by the task; `score_labels`: the valid label the model finds most likely;
    #: `score_texts`: the candidate whose text the model finds most likely as the answer (`candidates_of`)
    mode: str = "generate"
    #: what holds generated text: a `SpanOfContext`, a `genqa.data.mcq_format.MCQLayout`, a `GroundedLayout`, or
    #: None (free text)
    constraint: Any = None
    #: `score_labels`: the valid labels of a row
    labels_of: Callable[[dict[str, Any]], list[str]] | None = None
    #: `score_texts`: a row's candidates as (answer, text scored as the model's answer)
    candidates_of: Callable[[dict[str, Any]], list[tuple[str, str]]] | None = None
    #: `score_texts`: compare log-probabilities per character of the text (else their sum)
    per_char: bool = False
    #: score `no_answer_text` against the best (constrained) answer and answer "" when it wins by more than this;
    #: None: the model's own greedy choice
    no_answer_threshold: float | None = None
    no_answer_text: str | None = None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


@dataclass
class Task:
    """Base class: column mapping, prompt layout and answer parsing shared by all tasks."""

    args: QAArguments
    name: str = ""
    default_instruction: str = ""
    default_prompt_format: str = "{instruction}\n\nContext: {context}\n\nQuestion: {question}"
    #: the key of `genqa.scoring.task_metrics.METRICS` that scores this task's answers
    metric: str = "squad"
    #: answers are picked by scoring the option labels (MCQ), not by free generation
    scores_labels: bool = False
    #: every gold answer is a span of its context, with its offset (what an extractive span head trains on)
    answers_are_spans: bool = False
    #: default token budget of a generated answer (the recipe's `max_new_tokens` overrides it: `answer_budget`)
    max_new_tokens: int = 64

    @property
    def answer_budget(self) -> int:
        """Token budget of a generated answer: the recipe's `max_new_tokens`, else this task's default."""
        return self.args.max_new_tokens or self.max_new_tokens

    # ---- columns -----------------------------------------------------------------------------------------------
    def input_columns(self) -> list[str]:
        """Source columns the prompt needs (present in test data too)."""
        a = self.args
        return [c for c in (a.context_column, a.question_column) if c]

    def answer_columns(self) -> list[str]:
        """Source columns holding the gold answer (absent from unlabelled test data)."""
        return [self.args.answer_column] if self.args.answer_column else []

    def check_columns(self, columns: list[str], source: str, require_answer: bool) -> None:
        """Fail with the missing column, the columns the source has, and the recipe key to fix."""
        needed = self.input_columns() + (self.answer_columns() if require_answer else [])
        if self.args.id_column:
            needed.append(self.args.id_column)
        for col in needed:
            if col not in columns:
                key = next((k for k in ("id_column", "context_column", "question_column", "answer_column",
                                        "options_column") if getattr(self.args, k, None) == col), "options_columns")
                raise DataError(f"{source}: column `{col}` (recipe key `{key}`) is missing; the source has "
                                f"{', '.join(columns)}. Map the right column with `{key}: <name>` in the recipe "
                                f"(or `--{key} <name>` on the command line).")

    def to_canonical(self, dataset: Dataset, source: str, require_answer: bool = True) -> Dataset:
        """Check the columns and map every row of `dataset` onto `CANONICAL_FEATURES`."""
        self.check_columns(dataset.column_names, source, require_answer)
        has_answer = all(c in dataset.column_names for c in self.answer_columns())
        id_column = self.args.id_column or ("id" if "id" in dataset.column_names else None)

        skipped: list[str] = []
        numbering = re.compile(self.args.question_number_pattern) if self.args.question_number_pattern else None

        def convert(row: dict[str, Any], idx: int) -> dict[str, Any]:
            ex = {"id": _text(row[id_column]) if id_column else str(idx),
                  "context": _text(row.get(self.args.context_column)) if self.args.context_column else "",
                  "question": _text(row.get(self.args.question_column)) if self.args.question_column else "",
                  "options": [], "answers": [], "answer_starts": [], "label": -1}
            if numbering:
                ex["question"] = numbering.sub("", ex["question"], count=1)
            try:
                self.fill(ex, row, f"{source} row {idx} (id {ex['id']})", has_answer)
                if require_answer and has_answer and self.scores_labels and ex["label"] < 0:
                    raise DataError(f"{source} row {idx} (id {ex['id']}): the answer ({self.args.answer_column}) is "
                                    "empty; a training row needs its gold label")
            except DataError as err:
                if self.args.on_bad_row != "skip":
                    raise DataError(f"{err} (or set `on_bad_row: skip` to skip such rows, counted)") from None
                skipped.append(str(err))
                ex.update(options=[], answers=[], answer_starts=[], label=-2)  # -2 marks a skipped row
            return ex

        out = dataset.map(convert, with_indices=True, remove_columns=dataset.column_names,
                          features=CANONICAL_FEATURES, desc=f"Mapping {source} onto the {self.name} task",
                          load_from_cache_file=False)
        if skipped:
            out = out.filter(lambda label: label != -2, input_columns="label")
            shown = "\n  ".join(skipped[:5])
            say(f"[genqa] {source}: skipped {len(skipped)} bad rows (on_bad_row: skip), e.g.:\n  {shown}")
        return out

    def fill(self, ex: dict[str, Any], row: dict[str, Any], where: str, has_answer: bool) -> None:
        """Fill task-specific canonical fields of `ex` from the source `row`."""
        raise NotImplementedError

    # ---- prompt and target -------------------------------------------------------------------------------------
    @property
    def instruction(self) -> str:
        """The instruction at the top of every prompt."""
        return self.default_instruction if self.args.instruction is None else self.args.instruction

    def prompt_fields(self, ex: dict[str, Any]) -> dict[str, str]:
        """Fields available to `prompt_format`."""
        return {"instruction": self.instruction, "context": ex["context"], "question": ex["question"],
                "options": ""}

    def user_content(self, ex: dict[str, Any]) -> str:
        """The user turn of the prompt."""
        fmt = self.args.prompt_format or self.default_prompt_format
        problem = prompt_format_problem(fmt)  # checked when the recipe is parsed too; never format an unchecked one
        if problem:
            raise DataError(f"prompt_format {fmt!r}: {problem}.")
        return fmt.format(**self.prompt_fields(ex)).strip()

    def target(self, ex: dict[str, Any]) -> str:
        """The answer text the model is trained to produce."""
        raise NotImplementedError

    def messages(self, ex: dict[str, Any], with_answer: bool = True) -> list[dict[str, str]]:
        """The conversation for `ex`: optional system turn, user turn, and the answer as the assistant turn."""
        msgs = []
        if self.args.system_prompt:
            msgs.append({"role": "system", "content": self.args.system_prompt})
        msgs.append({"role": "user", "content": self.user_content(ex)})
        if with_answer:
            msgs.append({"role": "assistant", "content": self.target(ex)})
        return msgs

    # ---- reading answers back ----------------------------------------------------------------------------------
    def parse(self, text: str) -> str | None:
        """Turn a model's output into the task's answer (None when nothing usable was produced)."""
        return text.strip()

    def decoding(self, settings: PredictSettings, mcq_mode: str | None = None) -> Decoding:
        """How prediction decodes this task's answers under the backbone's prediction `settings` and `mcq_mode`
        (None: the recipe's): free generation here."""
        return Decoding()

    def gold(self, ex: dict[str, Any]) -> str | list[str]:
        """The gold answer of a canonical row, in the form `parse` returns."""
        return self.target(ex)

    def read_answer(self, row: dict[str, Any], raw: str, how: str) -> tuple[str | None, str]:
        """A model's raw output as this task's answer, and how it was obtained (`how` of the predictor: generate,
        label_score, span)."""
        answer = self.parse(raw)
        return answer, how if answer is not None else "unparseable"

    def has_gold(self, rows: list[dict[str, Any]]) -> bool:
        """True when the rows carry gold answers to score against (unlabelled test sets do not)."""
        return any(r["answers"] for r in rows)

    def recipe_warnings(self) -> list[str]:
        """Recipe settings that run but probably not as meant (printed by `--dry_run` and `preview`)."""
        return []

    def is_valid_answer(self, answer: str | None) -> bool:
        """Whether `answer` may go into a submission."""
        return answer is not None

    def recipe_problems(self) -> list[str]:
        """What the recipe lacks for training this task (checked by `--dry_run`, before any data is read)."""
        return []
