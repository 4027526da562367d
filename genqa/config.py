"""genqa's own recipe keys.

A recipe is one YAML file holding keys of three dataclasses, parsed together by TRL's `TrlParser`:

- `QAArguments` (this module): where the data comes from, which columns hold what, the QA task, the prompt
  template, the backbone and the submission format;
- `trl.SFTConfig`: every training argument under its TRL / transformers name (`max_length`, `learning_rate`, ...);
- `trl.ModelConfig`: the model, its dtype and attention, LoRA / rsLoRA / DoRA and 4-bit quantization.
"""

from __future__ import annotations

import argparse
import functools
import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from genqa.backbones import CHOICES as BACKBONES

TASKS = ("extractive", "mcq", "mcq_generation", "abstractive")
SPLIT_BY = ("context", "article", "row")
#: how an MCQ is answered: score the labels, generate and parse, or score the options' texts (per character / sum)
MCQ_MODES = ("score", "generate", "options", "options_sum")
#: the modes whose training target is the right option's text, not its label
OPTION_TEXT_MODES = ("options", "options_sum")
DATASET_FORMATS = ("auto", "hub", "json", "jsonl", "csv", "parquet", "xlsx", "squad", "c3", "disk")
#: the fields a `prompt_format` may use
PROMPT_FIELDS = ("instruction", "context", "question", "options")
#: lowest value of genqa's numeric keys (None values mean "unset" and are not checked)
MINIMUM = {"validation_size": 0, "split_seed": 0, "max_train_samples": 1, "max_eval_samples": 1, "doc_stride": 0,
           "max_answer_length": 1, "n_best_size": 1, "max_target_length": 1, "generation_eval_samples": 0,
           "generation_eval_max_new_tokens": 1, "max_new_tokens": 1}

#: highest value of genqa's numeric keys (seeds: numpy takes 32 bits)
MAXIMUM = {"split_seed": 2**32 - 1}


def out_of_range(key: str, value: object, low: float | None, high: float | None = None) -> str | None:
    """Why a numeric recipe value is outside [low, high] or not finite (None when it is inside, or not a number:
    None = unset)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    if not math.isfinite(value):
        return f"`{key}: {value}` is not a finite number; give a real value."
    if (low is None or value >= low) and (high is None or value <= high):
        return None
    bounds = [] if low is None else ["> 0" if 0 < low < 1e-6 else f">= {low:g}"]
    bounds += [] if high is None else [f"<= {high}" if isinstance(high, int) else f"<= {high:g}"]
    return f"`{key}: {value}` is out of range; it must be {' and '.join(bounds)}."


#: environment variables a recipe's `env:` may not set: where genqa and the Hugging Face libraries read and write,
#: and whether they go online. A shared recipe must not change those behind the user's back.
_ENV_PREFIXES = ("GENQA_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "DATASETS_", "XDG_", "LD_", "PYTHON", "WANDB_",
                 "MLFLOW_", "COMET_", "NEPTUNE_", "AWS_", "GOOGLE_", "AZURE_")
_ENV_SUFFIXES = ("_OFFLINE", "_CACHE", "_HOME", "_DIR", "_PATH", "_ENDPOINT", "_TOKEN", "_URL", "_URI", "_KEY",
                 "_PROXY")
_ENV_NAMES = {"HOME", "PATH", "TMPDIR", "TMP", "TEMP", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"}


def env_problem(env: Any) -> str | None:
    """Why a recipe's `env:` cannot be used (None when it can): it must map names to scalar values, none of which
    may change where genqa reads or writes (caches, home, temp folders, credentials) or whether it goes online."""
    if env is None:
        return None
    if not isinstance(env, dict) or not all(isinstance(v, str | int | float | bool) for v in env.values()):
        return "`env:` must be a mapping of variable names to plain values."
    refused = sorted(str(k) for k in env if str(k).upper() in _ENV_NAMES or str(k).upper().startswith(_ENV_PREFIXES)
                     or str(k).upper().endswith(_ENV_SUFFIXES))
    if refused:
        return (f"`env:` may not set {', '.join(refused)}: a recipe must not change where genqa reads or writes "
                "(caches, home, temp folders, credentials) or whether it goes online. Set them in your shell instead "
                "(e.g. `export HF_HUB_OFFLINE=1`) and remove them from `env:`.")
    return None


def flag_at_least(low: float, kind: type = int) -> Callable[[str], Any]:
    """An argparse `type` for a numeric command-line flag: the value as `kind`, refused (argparse's own one-line
    error, exit 2) when it is not a finite number of that kind at or above `low`."""
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'a whole number' if kind is int else 'a number'}") \
                from None
        problem = out_of_range("value", value, low)
        if problem:
            raise argparse.ArgumentTypeError(f"{text} is out of range: it must be a finite number >= {low:g}")
        return value

    convert.__name__ = kind.__name__  # argparse names the type in its messages
    return convert


@functools.lru_cache(maxsize=64)
def prompt_format_problem(fmt: str) -> str | None:
    """Why `fmt` is not a usable `prompt_format` (None when it is): it may use only the fields `PROMPT_FIELDS` by
    name, with no attribute or index access (`{context.__class__}`), conversion or format spec, and its braces must
    balance (`{{` / `}}` for literal ones). Checked with `string.Formatter().parse`, the parser `str.format` uses."""
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError as err:
        return f"it is not a valid format string ({err}); write literal braces as {{{{ and }}}}"
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in PROMPT_FIELDS:
            return (f"it uses the field {{{name}}}; only {', '.join('{' + f + '}' for f in PROMPT_FIELDS)} are "
                    "allowed, by name, without attribute or index access")
        if spec or conversion:
            return f"the field {{{name}}} has a conversion or format spec; write the bare field {{{name}}}"
    return None


@dataclass
class QAArguments:
    """Data source, column mapping, task, template and backbone of a genqa recipe."""

    # ---- data source -------------------------------------------------------------------------------------------
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "A hub dataset id, a local json/jsonl/csv/parquet/xlsx file, a SQuAD-format JSON file or a "
                  "`datasets.save_to_disk` folder, or a glob pattern (`data/*/*.json`) of files of one format, "
                  "concatenated in path order. Relative paths are resolved from the working directory."},
    )
    dataset_format: str = field(
        default="auto", metadata={"help": f"How to read `dataset_path`: one of {DATASET_FORMATS}. `auto` decides "
                                          "from the path (a SQuAD layout is detected inside .json files)."}
    )
    dataset_config: str | None = field(default=None, metadata={
        "help": "Hub dataset configuration name; for an xlsx file, the sheet to read (default: the first)."})
    train_split: str = field(default="train", metadata={"help": "Split trained on."})
    eval_split: str | None = field(
        default=None,
        metadata={"help": "Split used for validation. When unset, or absent from the source, a seeded split of "
                  "`validation_size` is taken from the train split (grouped by context, so no context leaks)."},
    )
    validation_size: float = field(
        default=0.1, metadata={"help": "Fraction (<1) or count (>=1) of train rows held out when the source has no "
                                       "validation split. 0 disables the split."}
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the train/validation split."})
    split_by: str = field(
        default="context",
        metadata={"help": f"What the seeded validation split keeps together, one of {SPLIT_BY}: `context` (no passage "
                  "on both sides), `article` (no SQuAD-layout article, its `title`, on both sides: held-out articles "
                  "the model never read), `row` (plain rows)."},
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep only the first N validation rows."})

    # ---- column mapping ----------------------------------------------------------------------------------------
    id_column: str | None = field(
        default=None, metadata={"help": "Column holding a row id (optional: row numbers are used when unset)."}
    )
    context_column: str | None = field(default="context", metadata={"help": "Column holding the passage."})
    question_column: str | None = field(default="question", metadata={"help": "Column holding the question."})
    answer_column: str | None = field(
        default="answers",
        metadata={"help": "Column holding the gold answer: span text (or a SQuAD `answers` dict) for extractive, "
                  "a label / option number / option text for mcq, the answer text for abstractive, the key for "
                  "mcq_generation."},
    )
    answer_start_column: str | None = field(
        default=None, metadata={"help": "Column with the answer's character offset (extractive; optional)."}
    )
    options_columns: list[str] | None = field(
        default=None, metadata={"help": "mcq / mcq_generation: one column per option, in label order."}
    )
    options_column: str | None = field(
        default=None, metadata={"help": "mcq: a single column holding the list of options (C3 `choice`)."}
    )
    options_in_question: bool = field(
        default=False,
        metadata={"help": "mcq: the options are lines `A. ...` inside the question text (Vietnamese exam MCQs); "
                  "they are split off into options."},
    )
    question_number_pattern: str | None = field(
        default=None,
        metadata={"help": "A regular expression removed from the start of every question, e.g. the exam numbering "
                  "`Câu 81.` of the VNHSGE questions: '^\\s*Câu\\s*\\d+\\s*[.:]\\s*'. A number that starts every "
                  "training target teaches an MCQ generator to count (`Câu 11: Câu 12: ...`)."},
    )

    on_bad_row: str = field(
        default="error",
        metadata={"help": "A row genqa cannot use (answer not in its context, unknown label, unparseable options): "
                  "`error` stops naming the row; `skip` drops such rows and prints how many and why."},
    )

    # ---- task --------------------------------------------------------------------------------------------------
    task: str = field(default="extractive", metadata={"help": f"One of {TASKS}."})
    instruction: str | None = field(
        default=None, metadata={"help": "Instruction placed at the top of every prompt (a task default if unset)."}
    )
    prompt_format: str | None = field(
        default=None,
        metadata={"help": "Python format string of the user turn, with fields {instruction} {context} {question} "
                  "{options}. A task default if unset."},
    )
    no_answer_text: str = field(
        default="unanswerable",
        metadata={"help": "Target text of unanswerable questions (SQuAD 2.0); read back as the empty answer."},
    )
    option_labels: list[str] = field(
        default_factory=lambda: ["A", "B", "C", "D"],
        metadata={"help": "Labels of the options, in order (`A B C D` or `1 2 3 4`). The answer is a label."},
    )
    mcq_question_prefix: str = field(default="Question:", metadata={"help": "mcq_generation: question line prefix."})
    mcq_answer_prefix: str = field(default="Answer:", metadata={"help": "mcq_generation: answer-key line prefix."})

    # ---- template ----------------------------------------------------------------------------------------------
    template: str = field(
        default="alpaca",
        metadata={"help": "A template name from templates/ (alpaca, alpaca_zh, llama2, llama3, chatml), a path to a "
                  ".jinja file, or `tokenizer` for the tokenizer's own chat template."},
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System message (templates that take one)."})

    # ---- backbone ----------------------------------------------------------------------------------------------
    gguf_file: str | None = field(
        default=None,
        metadata={"help": "A `.gguf` file inside `model_name_or_path` (a local folder, or a hub repo `owner/name`, "
                  "downloaded once when online): converted once to a safetensors folder in the cache and trained as "
                  "a full-precision model. Same as writing `model_name_or_path: FOLDER_OR_REPO/FILE.gguf`."},
    )
    backbone: str = field(
        default="auto",
        metadata={"help": f"One of {BACKBONES}. `auto` reads the model config: encoder-decoders train as seq2seq, "
                  "everything else as a causal LM."},
    )

    # ---- extractive encoders (backbone: extractive) -------------------------------------------------------------
    doc_stride: int | None = field(
        default=None,
        metadata={"help": "Overlap, in tokens, between the windows a long context is split into (default: "
                  "min(128, max_length // 3))."},
    )
    max_answer_length: int = field(default=30, metadata={"help": "Longest answer span considered, in tokens."})
    n_best_size: int = field(default=20, metadata={"help": "Start and end candidates searched per window."})
    null_score_diff_threshold: float = field(
        default=0.0,
        metadata={"help": "Predict no answer when the null score beats the best span by more than this (SQuAD 2.0)."},
    )

    # ---- generative extractive QA (causal LMs, task: extractive) ----------------------------------------------------
    mcq_mode: str = field(
        default="score",
        metadata={"help": f"How MCQ questions are answered (genqa predict uses it unless --mcq_mode is passed; one of "
                  f"{MCQ_MODES}): `score` scores the option labels in one forward pass; `generate` writes freely and "
                  "parses the label; `options` scores each option's text as the answer after the prompt and picks "
                  "the best sum of its tokens' log-probabilities per character (lm-evaluation-harness acc_norm), "
                  "`options_sum` the best plain sum (acc). With `options` / `options_sum` the model is trained to "
                  "answer with the right option's text (read back as its label)."},
    )
    constrain_to_context: bool = field(
        default=True,
        metadata={"help": "Span-constrained decoding for task extractive with a causal LM: every generated answer is a "
                  "substring of its context or the no-answer text (a prefix constraint on the generated bytes). "
                  "`false` lets the model write freely (answers are then mapped onto the context afterwards)."},
    )
    nearest_span: bool = field(
        default=False,
        metadata={"help": "With `constrain_to_context: false` (task extractive, causal LM): a free answer that is no "
                  "span of its context even after case and space folding is read back as the context span most like "
                  "it (whole words, character similarity), so every answer is a span while decoding stays free. "
                  "Gemma 3 270M on UIT-ViQuAD 1.0 (README): F1 43.0 against 42.0 free and 36.8 constrained."},
    )
    constrain_to_layout: bool = field(
        default=True,
        metadata={"help": "Layout-constrained decoding for task mcq_generation with a causal LM: every generated text "
                  "is one question in the recipe's layout (question prefix, one line per option label, options that "
                  "differ under the parser's comparison and hold no further option markers, a key among "
                  "option_labels, then the end token). It fixes the form, not the content: an option the model would "
                  "have copied from the line above becomes its next-best continuation of that line; no option may "
                  "equal, hold or sit inside another (the metric's nested_options). `false` lets the model write "
                  "freely (layout failures are then counted)."},
    )
    key_from_context: bool = field(
        default=False,
        metadata={"help": "With `constrain_to_layout` (task mcq_generation, causal LM): the answer key may only name "
                  "an option that occurs in the row's context (compared as the metric's key_in_context, normalised "
                  "under metric_lang); where none of the options before a row's hold position (the context's CRC-32 "
                  "modulo the number of labels) occurs in it, the option there is held to whole words of the "
                  "context. The other options stay the model's. For contexts that state the answer, such as the "
                  "VNHSGE explanations."},
    )
    no_answer_threshold: float | None = field(
        default=None,
        metadata={"help": "SQuAD 2.0-style no-answer calibration for a causal LM: decode the best span (no-answer text "
                  "not allowed), score the no-answer text against it (log-probability difference, answer and "
                  "end-of-turn token) and answer \"\" when the no-answer text wins by more than this. Pick it on "
                  "validation data (benchmarks/real_model_quality.py prints the best one). Unset: the model's own "
                  "greedy choice."},
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "Stop training after this many minutes of training steps (saved as a finished run): a "
                  "time budget for CPU runs. Unset: max_steps / num_train_epochs alone."},
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop training when `metric_for_best_model` (e.g. eval_loss, or eval_gen_f1 / "
                  "eval_gen_accuracy with generation_eval_samples) has not improved for this many evaluations "
                  "(transformers' EarlyStoppingCallback; needs load_best_model_at_end and an eval_strategy). The run "
                  "is saved as finished, with the best checkpoint's weights."},
    )

    # ---- seq2seq (backbone: seq2seq) ---------------------------------------------------------------------------
    max_target_length: int = field(default=32, metadata={"help": "Longest target (answer) in tokens for seq2seq."})

    # ---- generation-based evaluation during training -----------------------------------------------------------
    generation_eval_samples: int = field(
        default=0,
        metadata={"help": "At every evaluation, generate answers for the first N validation rows and log the task "
                  "metric as eval_gen_* (EM/F1, accuracy, MCQ-generation validity). 0 disables."},
    )
    generation_eval_max_new_tokens: int = field(default=64, metadata={"help": "Token budget of those answers."})
    max_new_tokens: int | None = field(
        default=None,
        metadata={"help": "Token budget of a generated answer at prediction time (genqa.generate; its "
                  "--max_new_tokens overrides it), end token included. Default by task: extractive 48, abstractive "
                  "64, mcq 8, mcq_generation 256. The training data report counts the trained answers longer than "
                  "it: predictions would cut those. The prompt's context is cut to leave this room in max_length."},
    )
    metric_lang: str = field(
        default="en", metadata={"help": "Answer normalisation of EM/F1: en (official SQuAD), vi (NFC), zh (chars)."}
    )

    # ---- submission --------------------------------------------------------------------------------------------
    submission_id_column: str = field(default="id", metadata={"help": "Id column name of the submission CSV."})
    submission_answer_column: str = field(
        default="answer", metadata={"help": "Answer column name of the submission CSV."}
    )

    # ---- run control -------------------------------------------------------------------------------------------
    dry_run: bool = field(
        default=False,
        metadata={"help": "Validate the recipe and print the resolved configuration, then exit without loading a "
                  "model or data."},
    )

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: unknown task {self.task!r}; choose one of {', '.join(TASKS)}.")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone: unknown backbone {self.backbone!r}; choose one of {', '.join(BACKBONES)}.")
        if self.dataset_format not in DATASET_FORMATS:
            raise ValueError(
                f"dataset_format: unknown format {self.dataset_format!r}; choose one of {', '.join(DATASET_FORMATS)}."
            )
        if isinstance(self.option_labels, str):
            self.option_labels = [s.strip() for s in self.option_labels.replace(",", " ").split()]
        if len(set(self.option_labels)) != len(self.option_labels) or not all(self.option_labels):
            raise ValueError(f"option_labels: labels must be distinct and non-empty, got {self.option_labels}.")
        if self.options_columns and self.options_column:
            raise ValueError("Set either `options_columns` (one column per option) or `options_column` (one list "
                             "column), not both.")
        if self.question_number_pattern:
            try:
                re.compile(self.question_number_pattern)
            except re.error as err:
                raise ValueError(f"question_number_pattern: {self.question_number_pattern!r} is not a regular "
                                 f"expression ({err}).") from None
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"on_bad_row: use error or skip, got {self.on_bad_row!r}.")
        if self.split_by not in SPLIT_BY:
            raise ValueError(f"split_by: use one of {', '.join(SPLIT_BY)}, got {self.split_by!r}.")
        if self.metric_lang not in ("en", "vi", "zh"):
            raise ValueError(f"metric_lang: use en, vi or zh, got {self.metric_lang!r}.")
        self._check_values()

    def _check_values(self) -> None:
        """Numeric keys at or above their `MINIMUM`, an `mcq_mode` of `MCQ_MODES`, and a `prompt_format` that
        `prompt_format_problem` accepts."""
        if self.mcq_mode not in MCQ_MODES:
            raise ValueError(f"mcq_mode: use one of {', '.join(MCQ_MODES)}, got {self.mcq_mode!r}.")
        for key, low in MINIMUM.items():
            problem = out_of_range(key, getattr(self, key), low, MAXIMUM.get(key))
            if problem:
                raise ValueError(problem)
        if self.prompt_format is not None:
            problem = prompt_format_problem(self.prompt_format)
            if problem:
                raise ValueError(f"prompt_format {self.prompt_format!r}: {problem}.")
