"""Train an extractive QA encoder (BERT / XLM-R / MiniLM + span head): full fine-tuning, LoRA or QLoRA.

`backbone: extractive` trains through the shared sequence of `genqa.backbones.training`. Canonical rows →
sliding windows (`genqa.backbones.spans`) → `transformers.Trainer` with the recipe's `SFTConfig` as training arguments →
run folder (model or adapter + span head, tokenizer, recipe, window reports, validation rows) → SQuAD EM/F1 of the
validation rows in `genqa_eval_metrics.json`.

Window and decoding settings are the `QAArguments` keys `doc_stride`, `max_answer_length`, `n_best_size` and
`null_score_diff_threshold` (a `doc_stride` of None means min(128, max_length // 3)).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl import ModelConfig, SFTConfig

from genqa.backbones import PredictOptions, PredictSettings
from genqa.backbones.batching import OnBatch
from genqa.backbones.loading import resolve_model_path
from genqa.backbones.spans import (
    WindowReport,
    check_window,
    cls_index,
    default_doc_stride,
    predict_extractive,
    prepare_train_features,
    window_report,
)
from genqa.config import QAArguments
from genqa.data.tasks import Task, get_task
from genqa.errors import DataError
from genqa.files import write_atomic
from genqa.messages import say
from genqa.recipe import RecipeError
from genqa.run_dir import EVAL_METRICS_FILE, EVAL_PREDICTIONS_FILE, SETTINGS_FILE

NAME = "extractive"
AUTO_CLASS = "AutoModelForQuestionAnswering"
PIPELINE_TAG = "question-answering"
#: the window length when the recipe sets `max_length: null`
DEFAULT_MAX_LENGTH = 384
USES_TEMPLATE = False
#: model types detected as extractive encoders (`backbone: auto`) even without a question-answering head
ENCODER_FAMILIES = ("bert", "roberta", "xlm-roberta", "distilbert", "electra", "deberta", "deberta-v2", "albert")
QA_HEAD = "qa_outputs"
LABEL_NAMES = ["start_positions", "end_positions"]


def extractive_settings(qa: QAArguments, max_length: int) -> dict[str, Any]:
    """Window and decoding settings of a recipe (the `QAArguments` keys, with max_length from SFTConfig)."""
    return {
        "max_length": int(max_length),
        "doc_stride": int(default_doc_stride(max_length) if qa.doc_stride is None else qa.doc_stride),
        "max_answer_length": int(qa.max_answer_length),
        "n_best_size": int(qa.n_best_size),
        "null_score_diff_threshold": float(qa.null_score_diff_threshold),
    }


def load_model(model_args: ModelConfig):
    """`AutoModelForQuestionAnswering` as `genqa.backbones.loading.load_model` loads it, the span head never quantized.

    bitsandbytes would otherwise turn `qa_outputs` into a `Linear4bit` that LoRA's `modules_to_save` cannot train.
    """
    from transformers import AutoModelForQuestionAnswering

    from genqa.backbones.loading import load_model as load

    return load(model_args, AutoModelForQuestionAnswering, skip_quant_modules=(QA_HEAD,))


def load_extractive_run(run_dir: str | Path, model_args=None):
    """(model, tokenizer, settings) of a finished extractive run folder, ready for `predict_extractive`.

    The base model (quantized as the recipe says) gets the LoRA adapter and trained span head when the folder holds
    an adapter; a fully fine-tuned folder is loaded as is. `settings` are the window / decoding settings the run
    was trained with (`genqa_extractive.json`; {} for folders without one). `model_args` defaults to the run's
    saved recipe.
    """
    from transformers import AutoTokenizer

    run = Path(run_dir)
    if model_args is None:
        from genqa.run_dir import load_run

        model_args = load_run(run)[2]
    settings = json.loads((run / SETTINGS_FILE).read_text(encoding="utf-8")) if (run / SETTINGS_FILE).is_file() else {}
    tokenizer = AutoTokenizer.from_pretrained(str(run))
    if (run / "adapter_config.json").is_file():
        from peft import PeftModel

        model = PeftModel.from_pretrained(load_model(model_args), str(run))
    else:
        args = copy.copy(model_args)
        args.model_name_or_path = str(run)
        model = load_model(args)
    return model.eval(), tokenizer, settings


def model_max_length(tokenizer, model_path: str, trust_remote_code: bool = False) -> int | None:
    """Longest window the model takes: the tokenizer's `model_max_length`, else the config's positions."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 1_000_000:
        return limit
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    positions = getattr(config, "max_position_embeddings", None)
    if positions and getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2  # RoBERTa positions start after the padding index
    return positions


def encode_split(rows, split: str, tokenizer, settings: dict[str, Any], num_proc: int | None = None):
    """Canonical rows → training windows (a `Dataset`) and their `WindowReport`."""
    max_length, doc_stride = settings["max_length"], settings["doc_stride"]

    def fn(batch: dict[str, list], indices: list[int]) -> dict:
        out = prepare_train_features(batch, tokenizer, max_length, doc_stride, keep_sample_mapping=True)
        out["row_index"] = [indices[m] for m in out.pop("overflow_to_sample_mapping")]
        return out

    try:
        ds = rows.map(fn, batched=True, with_indices=True, remove_columns=rows.column_names, num_proc=num_proc,
                      desc=f"Windowing {split} rows")
    except ValueError as err:
        raise RecipeError(f"{split}: {err}") from err
    cls_positions = [cls_index(ids, tokenizer) for ids in ds["input_ids"]]
    report = window_report(split, rows, ds["row_index"], ds["start_positions"], cls_positions, max_length,
                           doc_stride)
    return ds.remove_columns(["row_index"]), report


def detects(config) -> bool:
    """Configs with a question-answering head, or of an encoder family that takes one."""
    archs = " ".join(getattr(config, "architectures", None) or [])
    return "QuestionAnswering" in archs or getattr(config, "model_type", "") in ENCODER_FAMILIES


def check(qa: QAArguments, sft: SFTConfig, model_args: ModelConfig, tokenizer, where: str) -> None:
    """The task is extractive, and the window and span-search settings fit the tokenizer and the model."""
    from genqa.backbones.loading import trusts_remote_code

    settings = extractive_settings(qa, sft.max_length or DEFAULT_MAX_LENGTH)

    if not get_task(qa).answers_are_spans:
        raise RecipeError(f"{where}: backbone extractive trains span extraction; set `task: extractive` (got "
                          f"{qa.task!r}) or choose another backbone.")
    try:
        check_window(tokenizer, settings["max_length"], settings["doc_stride"])
    except ValueError as err:
        raise RecipeError(f"{where}: {model_args.model_name_or_path}: {err}") from err
    limit = model_max_length(tokenizer, resolve_model_path(model_args.model_name_or_path),
                             trusts_remote_code(model_args))
    if limit and settings["max_length"] > limit:
        raise RecipeError(f"{where}: max_length={settings['max_length']} exceeds what "
                          f"{model_args.model_name_or_path} takes ({limit} tokens); set `max_length: 384` (and "
                          "`doc_stride: 128`) or lower.")
    if settings["max_answer_length"] < 1 or settings["n_best_size"] < 1:
        raise RecipeError(f"{where}: max_answer_length and n_best_size must be >= 1.")


def attach_lora(model, model_args: ModelConfig, sft):
    """Wrap `model` with LoRA; the span head is trained in full through `modules_to_save`.

    No PEFT task type on purpose: PEFT 0.21's `PeftModelForQuestionAnswering.forward` does not pass
    `token_type_ids` (nor `position_ids`) to the model, so BERT-style models would train without segment embeddings
    and then meet them at inference and after merging. The generic `PeftModel` forwards every input.
    """
    from genqa.backbones.loading import attach_lora as attach

    model = attach(model, model_args, sft, None, modules_to_save=(QA_HEAD,))
    head = [n for n, p in model.named_parameters() if QA_HEAD in n and p.requires_grad]
    if not head:
        raise RecipeError(f"LoRA left the span head `{QA_HEAD}` frozen; add it to `lora_modules_to_save`.")
    return model


def _score(model, tokenizer, rows, settings: dict[str, Any], version_2: bool, batch_size: int, sft,
           lang: str = "en") -> tuple:
    from genqa.scoring.metrics import squad_scores

    amp = "bf16" if sft.bf16 else "fp16" if sft.fp16 else None  # score in the precision the run trained in
    start = time.perf_counter()
    answers = predict_extractive(model, tokenizer, rows, settings["max_length"], settings["doc_stride"],
                                 batch_size=batch_size, autocast_dtype=amp, n_best_size=settings["n_best_size"],
                                 max_answer_length=settings["max_answer_length"],
                                 null_score_diff_threshold=settings["null_score_diff_threshold"],
                                 version_2_with_negative=version_2)
    wall = time.perf_counter() - start
    ids = list(rows["id"])
    predictions = dict(zip(ids, answers, strict=True))
    golds = list(zip(ids, [list(a) for a in rows["answers"]], strict=True))
    scores = squad_scores(golds, predictions, lang=lang, version=2)
    scores.update(rows=len(ids), version_2_with_negative=version_2, predict_seconds=round(wall, 3),
                  examples_per_second=round(len(ids) / wall, 2) if wall > 0 else None)
    return scores, predictions


def _window_splits(qa: QAArguments, sft: SFTConfig, encoder: WindowEncoder, train_rows, eval_rows,
                   where: str) -> tuple[Any, Any, list[WindowReport]]:
    """Training and validation windows with their reports (printed); fails when no window can teach a span."""
    num_proc = getattr(sft, "dataset_num_proc", None)
    train_ds, train_report = encoder.encode_dataset(train_rows, "train", num_proc)
    reports: list[WindowReport] = [train_report]
    say(train_report.summary())
    if train_report.answer_windows == 0 and train_report.answerable_rows:
        raise DataError(f"{qa.dataset_path}: no training window holds an answer; raise max_length.")
    eval_ds = None
    if eval_rows is not None and len(eval_rows):
        eval_ds, eval_report = encoder.encode_dataset(eval_rows, "validation", num_proc)
        reports.append(eval_report)
        say(eval_report.summary())
    if sft.eval_strategy != "no" and eval_ds is None:
        raise RecipeError(f"{where}: eval_strategy={sft.eval_strategy} but there is no validation data; set "
                          "`validation_size` or `eval_split`, or `eval_strategy: 'no'`.")
    return train_ds, eval_ds, reports


@dataclass
class WindowEncoder:
    """How the extractive backbone encodes rows: sliding windows of (question, context) with span positions."""

    tokenizer: Any
    #: window and span-search settings (`extractive_settings`)
    settings: dict[str, Any]

    def encode_dataset(self, rows, split: str = "train", num_proc: int | None = None):
        """Canonical rows → training windows (a `Dataset`) and their `WindowReport`."""
        return encode_split(rows, split, self.tokenizer, self.settings, num_proc)


def encoder(qa: QAArguments, sft: SFTConfig, tokenizer, template: str, task: Task) -> WindowEncoder:
    """The window encoder (`genqa preview` shows prompt encoders only: windows have span positions, no trained
    tokens)."""
    return WindowEncoder(tokenizer, extractive_settings(qa, sft.max_length or DEFAULT_MAX_LENGTH))


def encode_splits(encoder: WindowEncoder, train_rows, eval_rows, qa: QAArguments, sft: SFTConfig,
                  recipe_path: str | None) -> tuple:
    """Training and validation windows with their reports (`_window_splits`)."""
    return _window_splits(qa, sft, encoder, train_rows, eval_rows, recipe_path or "command line")


def trainer(model, tokenizer, encoder: WindowEncoder, train_ds, eval_ds, eval_rows, qa: QAArguments,
            sft: SFTConfig, model_args: ModelConfig):
    """transformers' `Trainer` on the windows: LoRA with the span head trained in full, or full fine-tuning."""
    from transformers import Trainer, default_data_collator

    from genqa.backbones.loading import activation_checkpointing
    from genqa.backbones.sampling import resumable_length_grouping

    if model_args.use_peft:
        model = attach_lora(model, model_args, sft)
        say(f"[genqa] LoRA: the span head `{QA_HEAD}` trains in full")
    elif activation_checkpointing(sft)[0]:
        model.config.use_cache = False
    if sft.label_names is None:
        sft.label_names = list(LABEL_NAMES)
    return resumable_length_grouping(Trainer)(model=model, args=sft, train_dataset=train_ds, eval_dataset=eval_ds,
                                              data_collator=default_data_collator, processing_class=tokenizer)


def after_training(trainer, encoder: WindowEncoder, reports: list, eval_rows, qa: QAArguments,
                   sft: SFTConfig) -> None:
    """Save the span-search settings the run trained with, and score the validation rows (SQuAD EM/F1)."""
    # SQuAD 2.0-style decoding (answer "" when the CLS score wins) only when the model was taught to abstain.
    version_2 = reports[0].unanswerable_rows > 0
    settings = encoder.settings
    if trainer.is_world_process_zero():
        write_atomic(Path(sft.output_dir) / SETTINGS_FILE,
                     json.dumps({**settings, "version_2_with_negative": version_2}, indent=2) + "\n")
    if eval_rows is not None and len(eval_rows):
        # Every rank scores (sharded ZeRO-3 weights need all ranks in each forward); rank 0 writes.
        scores, predictions = _score(trainer.model, encoder.tokenizer, eval_rows, settings, version_2,
                                     sft.per_device_eval_batch_size, sft, qa.metric_lang)
        if trainer.is_world_process_zero():
            out = Path(sft.output_dir)
            write_atomic(out / EVAL_METRICS_FILE, json.dumps(scores, indent=2) + "\n")
            write_atomic(out / EVAL_PREDICTIONS_FILE, json.dumps(predictions, indent=2, ensure_ascii=False) + "\n")
            say(f"[genqa] validation ({scores['rows']} rows): EM {scores['exact']:.2f}  F1 {scores['f1']:.2f} "
                f"-> {out / EVAL_METRICS_FILE}")


def prediction_settings(folders: list[str | None], qa: QAArguments, sft: SFTConfig, passed: set[str]
                        ) -> PredictSettings:
    """Span-search settings for prediction: those the run was trained with (saved in the first of `folders` that
    has them), overridden by the keys `passed` on the command line; the recipe's values where the run saved none."""
    from_recipe = {**extractive_settings(qa, sft.max_length or DEFAULT_MAX_LENGTH), "version_2_with_negative": True}
    settings = dict(from_recipe)
    saved = next((Path(f) / SETTINGS_FILE for f in folders if f and (Path(f) / SETTINGS_FILE).is_file()), None)
    if saved is not None:
        settings.update(json.loads(saved.read_text(encoding="utf-8")))
    settings.update({k: v for k, v in from_recipe.items() if k in passed})
    return PredictSettings(span_search=settings)


def predict(model, tokenizer, template: str, task: Task, rows: list[dict[str, Any]], options: PredictOptions,
            on_batch: OnBatch | None = None) -> list[str]:
    """Answer spans ("" = no answer) for canonical rows, a few batches of rows at a time; `on_batch(pairs, "span")`
    after each."""
    size = options.batch_size * 8
    out: list[str] = []
    for start in range(0, len(rows), size):
        chunk = rows[start:start + size]
        spans = predict_extractive(model, tokenizer, {"context": [r["context"] for r in chunk],
                                                      "question": [r["question"] for r in chunk]},
                                   batch_size=options.batch_size, **options.settings.span_search)
        if on_batch:
            on_batch(list(zip(range(start, start + len(chunk)), spans, strict=True)), "span")
        out.extend(spans)
    return out


def check_batch(task: Task, tokenizer, template: str, sft: SFTConfig, rows: list[dict[str, Any]]) -> dict:
    """(question, context) windows of `rows`, as the span head sees them."""
    return dict(tokenizer([r["question"] for r in rows], [r["context"] for r in rows], truncation="only_second",
                          max_length=sft.max_length or DEFAULT_MAX_LENGTH, padding=True, return_tensors="pt"))
