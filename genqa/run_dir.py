"""The run folder: what a training run leaves behind, and how later steps read it back.

A run folder holds the adapter (or full model), the tokenizer with its chat template, the trainer state and
checkpoints, and genqa's own files: the fully resolved recipe (`genqa_recipe.yaml`), the tokenization report
(`genqa_data_report.json`) and the validation rows in canonical form (`genqa_validation.jsonl`), which merge checks
and evaluation reuse.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from datasets import Dataset
from trl import ModelConfig, SFTConfig

from genqa.config import QAArguments
from genqa.data.tasks import CANONICAL_FEATURES
from genqa.files import write_atomic
from genqa.messages import is_main_process, open_run_log, say
from genqa.recipe import RecipeError, dump_recipe, parse_recipe, resolved_recipe
from genqa.run_card import (  # noqa: F401  (the files genqa writes for people: named in run_card, listed here)
    ALL_RESULTS_FILE,
    HUB_CARD_FILE,
    LOSS_PLOT_FILE,
    MODEL_CARD_FILE,
    TRAINER_LOG_FILE,
)
from genqa.run_card import attach as attach_run_card
from genqa.run_card import finish as finish_run_card

RECIPE_FILE = "genqa_recipe.yaml"
REPORT_FILE = "genqa_data_report.json"
VALIDATION_FILE = "genqa_validation.jsonl"
#: span-search settings an extractive run was trained with
SETTINGS_FILE = "genqa_extractive.json"
EVAL_METRICS_FILE = "genqa_eval_metrics.json"
EVAL_PREDICTIONS_FILE = "genqa_eval_predictions.json"
#: files a merged folder carries over from its run: validation rows for checks, span-search settings
CARRIED_FILES = (VALIDATION_FILE, SETTINGS_FILE)


def prepare_output_dir(sft: SFTConfig) -> str | bool | None:
    """Create the output folder; return the checkpoint to resume from (explicit, or the last one found).

    A folder holding a finished model or checkpoints is never trained over from scratch: genqa resumes, or refuses.
    """
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(sft.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = sft.resume_from_checkpoint
    last = get_last_checkpoint(str(out))
    finished = any(out.glob("adapter_model.safetensors")) or any(out.glob("model*.safetensors"))
    if isinstance(wanted, str) and wanted.lower() in ("false", "no", "never"):
        if finished or last:
            raise RecipeError(f"output_dir {out} already holds a trained model or checkpoints; starting over "
                              "(`resume_from_checkpoint: never`) would overwrite them. Choose another output_dir or "
                              "remove that folder.")
        return None
    if isinstance(wanted, str) and wanted.lower() not in ("true", "auto", "latest", "last"):
        if not Path(wanted).is_dir():
            raise RecipeError(f"resume_from_checkpoint: {wanted} is not a checkpoint folder.")
        say(f"[genqa] resuming from {wanted}")
        return wanted
    if last is not None:
        say(f"[genqa] resuming from the last checkpoint in {out}: {last} "
            "(use another output_dir to start over)")
        return last
    if finished:
        raise RecipeError(f"output_dir {out} already holds a trained model and no checkpoint to resume from; "
                          "choose another output_dir or remove it (genqa does not overwrite a finished run).")
    if wanted:
        say(f"[genqa] no checkpoint in {out} yet: starting from scratch")
    return None


# Keys that may change when a run is resumed (how long, how often to log/save/evaluate, where to report).
RUN_CONTROL_KEYS = {
    "output_dir", "max_steps", "num_train_epochs", "resume_from_checkpoint", "logging_steps", "logging_dir",
    "save_steps", "save_strategy", "save_total_limit", "eval_steps", "eval_strategy", "report_to", "run_name",
    "disable_tqdm", "dataloader_num_workers", "per_device_eval_batch_size", "generation_eval_samples",
    "generation_eval_max_new_tokens", "dry_run", "use_cpu", "logging_first_step", "logging_strategy",
}


def check_resumed_recipe(output_dir: str, recipe: dict[str, Any]) -> None:
    """Refuse to resume a run with a recipe that differs from the one it was trained with (except run control)."""
    import yaml

    path = Path(output_dir) / RECIPE_FILE
    if not path.is_file():
        return
    saved = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    changed = sorted(k for k in set(saved) | set(recipe)
                     if k not in RUN_CONTROL_KEYS and saved.get(k) != recipe.get(k))
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {recipe.get(k)!r}" for k in changed[:6])
        raise RecipeError(f"output_dir {output_dir} holds a run trained with a different recipe ({detail}); "
                          "resuming would mix the two. Use another output_dir, or the recipe the run was started "
                          f"with ({path}).")


def save_run_files(output_dir: str, qa: QAArguments, sft: SFTConfig, model_args: ModelConfig, reports: list,
                   validation: Dataset | None) -> None:
    """Write the resolved recipe, the tokenization report and the canonical validation rows into the run folder."""
    if not is_main_process():
        return
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dump_recipe(resolved_recipe(qa, sft, model_args), out / RECIPE_FILE)
    write_atomic(out / REPORT_FILE, json.dumps([r.to_dict() for r in reports], indent=2, ensure_ascii=False))
    if validation is not None:
        lines = (json.dumps(row, ensure_ascii=False) for row in validation)
        write_atomic(out / VALIDATION_FILE, "\n".join(lines) + "\n")


def load_run(run_dir: str | os.PathLike, overrides: list[str] | None = None
             ) -> tuple[QAArguments, SFTConfig, ModelConfig]:
    """The (QAArguments, SFTConfig, ModelConfig) a run was trained with, from its saved recipe."""
    path = Path(run_dir) / RECIPE_FILE
    if not path.is_file():
        raise RecipeError(f"{run_dir}: no {RECIPE_FILE}; is this a genqa run folder? Pass --recipe RECIPE.yaml.")
    qa, sft, model_args, _ = parse_recipe(["--config", str(path), *(overrides or [])])
    return qa, sft, model_args


def load_validation_rows(run_dir: str | os.PathLike) -> Dataset | None:
    """The canonical validation rows saved by a run (None if it had none)."""
    path = Path(run_dir) / VALIDATION_FILE
    if not path.is_file():
        return None
    rows: list[dict[str, Any]] = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return Dataset.from_list(rows, features=CANONICAL_FEATURES) if rows else None


def start_run(qa: QAArguments, sft: SFTConfig, model_args: ModelConfig, tokenizer, template: str, reports: list,
              validation: Dataset | None) -> str | bool | None:
    """Prepare the run folder before training (template onto the tokenizer, genqa's files written); returns the
    checkpoint to resume from."""
    if template:
        tokenizer.chat_template = template  # the run folder's tokenizer carries the template it was trained with
    resume = prepare_output_dir(sft)
    open_run_log(sft.output_dir)
    if resume:
        check_resumed_recipe(sft.output_dir, resolved_recipe(qa, sft, model_args))
    save_run_files(sft.output_dir, qa, sft, model_args, reports, validation)
    return resume


def check_fsdp(trainer) -> None:
    """Refuse to train when the accelerate config asks for FSDP and accelerate did not enable it.

    accelerate enables FSDP only for GPU-like devices: with `use_cpu` (set by genqa.sft when there is no GPU) it runs
    plain DDP instead, without a word, and the FSDP settings (sharding, state-dict type) are ignored.
    """
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not trainer.is_fsdp_enabled:
        raise RecipeError("the accelerate config asks for FSDP, but accelerate enables FSDP only on GPUs (and other "
                          "accelerators), not on the CPU, where this run would silently be plain DDP. On this "
                          "machine use accelerate_configs/ddp.yaml, or a DeepSpeed config with DS_ACCELERATOR=cpu.")


def train_and_finish(trainer, resume: str | bool | None, tokenizer, qa: QAArguments, sft: SFTConfig,
                     model_args: ModelConfig, reports: list, validation: Dataset | None) -> str:
    """Train (resuming from `resume`, as `start_run` returned it) after checking accelerate kept its promise of FSDP,
    then save everything with `finish_run`; returns the run folder. Every trainer (causal, seq2seq, extractive) ends
    here."""
    check_fsdp(trainer)
    attach_run_card(trainer, qa, sft, model_args, reports)
    trainer.train(resume_from_checkpoint=resume)
    return finish_run(trainer, tokenizer, qa, sft, model_args, reports, validation)


def finish_run(trainer, tokenizer, qa: QAArguments, sft: SFTConfig, model_args: ModelConfig, reports: list,
               validation: Dataset | None) -> str:
    """Save the model (adapter or full), trainer state, tokenizer and genqa's files; returns the run folder."""
    trainer.save_model(sft.output_dir)
    trainer.save_state()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(sft.output_dir)
    save_run_files(sft.output_dir, qa, sft, model_args, reports, validation)
    finish_run_card(trainer, qa, sft, model_args, reports)
    return sft.output_dir
