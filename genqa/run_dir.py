"""The run folder: what a training run leaves behind, and how later steps read it back.

A run folder holds the adapter (or full model), the tokenizer with its chat template, the trainer state and
checkpoints, and genqa's own files: the fully resolved recipe (`genqa_recipe.yaml`), the tokenization report
(`genqa_data_report.json`) and the validation rows in canonical form (`genqa_validation.jsonl`), which merge checks
and evaluation reuse.

Resume and finish (why genqa checks what Trainer does not):

- Trainer's `get_last_checkpoint` takes the highest `checkpoint-N` without looking inside, and Trainer writes a
  checkpoint in place, file by file: a process killed while saving leaves a folder that every rerun picked and failed
  on. genqa resumes from the newest *complete* checkpoint (`checkpoint_problem`: `trainer_state.json`, which Trainer
  writes last, parses; the weights open with their full length; optimizer state is there) and sets incomplete ones
  aside, naming them. Validating instead of making Trainer's saves atomic keeps Trainer's own save code (DeepSpeed,
  FSDP, PEFT, sharded models) untouched; the one assumption, that `trainer_state.json` comes last, is what
  `Trainer._save_checkpoint` does and what `tests/test_kill.py` exercises with kills during saves.
- A run is *finished* when `FINISHED_FILE` is there: written after every final file, and removed before any
  training that would rewrite them. Rerunning a finished run with a `max_steps` (or `num_train_epochs`) it has
  reached reports it and changes nothing (`finished_run_message`). Raising `max_steps` continues from the last
  checkpoint. When the checkpoint resumed from already reached `max_steps` (a kill after the last checkpoint but
  before the final files were written), nothing is trained: Trainer would otherwise run one more step whenever
  `max_steps` is not a multiple of the steps per epoch; the final files are written from that checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any

from datasets import Dataset
from transformers import TrainerCallback
from trl import ModelConfig, SFTConfig

from genqa.config import QAArguments
from genqa.data.tasks import CANONICAL_FEATURES
from genqa.data.templates import portable_template
from genqa.files import write_atomic
from genqa.messages import is_main_process, open_run_log, say
from genqa.recipe import RecipeError, dump_recipe, parse_recipe, read_yaml, resolved_recipe, trainable_parameters
from genqa.run_card import (  # noqa: F401  (the files genqa writes for people: named in run_card, listed here)
    ALL_RESULTS_FILE,
    HUB_CARD_FILE,
    LOSS_PLOT_FILE,
    MODEL_CARD_FILE,
)
from genqa.run_card import attach as attach_run_card
from genqa.run_card import finish as finish_run_card
from genqa.stopping import stopping_callbacks
from genqa.trainer_log import TRAINER_LOG_FILE  # noqa: F401  (listed with the files above)

RECIPE_FILE = "genqa_recipe.yaml"
REPORT_FILE = "genqa_data_report.json"
VALIDATION_FILE = "genqa_validation.jsonl"
#: span-search settings an extractive run was trained with
SETTINGS_FILE = "genqa_extractive.json"
EVAL_METRICS_FILE = "genqa_eval_metrics.json"
EVAL_PREDICTIONS_FILE = "genqa_eval_predictions.json"
#: files a merged folder carries over from its run: validation rows for checks, span-search settings
CARRIED_FILES = (VALIDATION_FILE, SETTINGS_FILE, REPORT_FILE)
#: written last when a run has saved all its final files (global_step, epoch, max_steps, num_train_epochs)
FINISHED_FILE = "genqa_finished.json"
#: held while a training writes the run folder (`genqa.locks`)
LOCK_FILE = "genqa.lock"
TRAINER_STATE_FILE = "trainer_state.json"


def weights_problem(folder: Path) -> str | None:
    """Why the model weights in `folder` (a checkpoint or a run folder) cannot be loaded; None when they can.

    safetensors files are opened (`safe_open` checks the header and that the file covers every tensor, so a file cut
    short is caught without reading the weights); `.bin` files are zip archives whose directory sits at the end."""
    from safetensors import SafetensorError, safe_open

    files = [folder / n for n in ("adapter_model.safetensors", "model.safetensors") if (folder / n).is_file()]
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                return f"{index_name} is unreadable"
            files += [folder / s for s in shards]
    files += [folder / n for n in ("adapter_model.bin", "pytorch_model.bin") if (folder / n).is_file()]
    if not files and not any(folder.glob("pytorch_model_fsdp_*")):
        return "no model weights"
    for path in files:
        if not path.is_file():
            return f"{path.name} is missing"
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except (SafetensorError, OSError) as err:
                return f"{path.name} is unreadable ({err})"
        elif not zipfile.is_zipfile(path):
            return f"{path.name} is cut short"
    return None


def _has_optimizer_state(folder: Path) -> bool:
    """Optimizer state as Trainer (optimizer.pt), FSDP (optimizer.bin, optimizer_0/) or DeepSpeed (`latest` naming
    its global_step folder) saves it."""
    if any((folder / name).exists() for name in ("optimizer.pt", "optimizer.bin", "optimizer_0")):
        return True
    latest = folder / "latest"
    try:
        return latest.is_file() and (folder / latest.read_text(encoding="utf-8").strip()).is_dir()
    except OSError:
        return False


def checkpoint_problem(folder: Path) -> str | None:
    """Why checkpoint `folder` cannot be resumed from; None when it is complete.

    Trainer writes `trainer_state.json` last, after the weights, optimizer, scheduler and RNG states, and not
    atomically: a save cut short leaves it missing or not parseable. The weights and optimizer state are checked too,
    since a checkpoint being deleted (`save_total_limit` rotation) can lose them first."""
    try:
        state = json.loads((folder / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {TRAINER_STATE_FILE}: its save was interrupted"
    except (OSError, ValueError):
        return f"{TRAINER_STATE_FILE} is cut short: its save was interrupted"
    if not isinstance(state, dict) or not isinstance(state.get("global_step"), int):
        return f"{TRAINER_STATE_FILE} has no global_step"
    if not _has_optimizer_state(folder):
        return "no optimizer state"
    return weights_problem(folder)


def find_checkpoints(out: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest complete `checkpoint-N` folder in run folder `out` (None if none), and every incomplete one with
    what is wrong with it, newest first."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    pattern = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
    found = sorted(((int(m.group(1)), p) for p in out.iterdir() if (m := pattern.match(p.name)) and p.is_dir()),
                   reverse=True)
    newest, incomplete = None, []
    for _, path in found:
        problem = checkpoint_problem(path)
        if problem:
            incomplete.append((path, problem))
        elif newest is None:
            newest = path
    return newest, incomplete


def set_aside(incomplete: list[tuple[Path, str]]) -> None:
    """Rename incomplete checkpoints to `incomplete-checkpoint-N` (main process only) and say so.

    They are moved rather than left in place because Trainer's `save_total_limit` rotation counts every
    `checkpoint-*` folder and keeps the one it sorts last: a stale `checkpoint-99` would survive while the complete
    checkpoints written after it are deleted. They are not deleted: what a user finds odd can still be looked at."""
    for path, problem in incomplete:
        target = path.with_name(f"incomplete-{path.name}")
        if is_main_process():
            k = 2
            while target.exists():
                target, k = path.with_name(f"incomplete-{path.name}-{k}"), k + 1
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, target)
        say(f"[genqa] skipping {path} ({problem}); moved to {target.name} (delete it when you like)")


def read_finished(out: Path) -> dict[str, Any] | None:
    """What `FINISHED_FILE` says about a finished run in `out` (global_step, epoch, max_steps, num_train_epochs), or
    None when `out` holds no finished run (no marker, or the final weights are missing or cut short)."""
    try:
        done = json.loads((out / FINISHED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(done, dict) or not isinstance(done.get("global_step"), int) or weights_problem(out):
        return None
    return done


def _reached(done: dict[str, Any], sft: SFTConfig) -> bool:
    """True when a run that ended at `done` needs no more training for this command's max_steps / epochs. A run that
    stopped early on purpose (time budget, early stopping) is finished for the limits it was started with."""
    early = bool(done.get("stopped_early"))
    if sft.max_steps > 0:
        return done["global_step"] >= sft.max_steps or (early and sft.max_steps <= int(done.get("max_steps") or 0))
    epochs = float(sft.num_train_epochs)
    return (float(done.get("epoch") or 0) >= epochs - 1e-9
            or (early and epochs <= float(done.get("num_train_epochs") or 0) + 1e-9))


def _never(wanted: Any) -> bool:
    return isinstance(wanted, str) and wanted.lower() in ("false", "no", "never")


def finished_run_message(qa: QAArguments, sft: SFTConfig, model_args: ModelConfig) -> str | None:
    """The report for a rerun of a finished run (then there is nothing to do and nothing may change); None when
    `output_dir` holds no finished run, or this command asks for more steps or epochs than it trained.

    A run is finished when `FINISHED_FILE` (written after every final file) is there and its step count reaches
    this command's `max_steps` (or its epoch count `num_train_epochs`). A different recipe is refused as on resume."""
    out = Path(sft.output_dir)
    done = read_finished(out) if out.is_dir() else None
    if done is None or _never(sft.resume_from_checkpoint) or not _reached(done, sft):
        return None
    check_resumed_recipe(str(out), resolved_recipe(qa, sft, model_args))
    asked = f"max_steps {sft.max_steps}" if sft.max_steps > 0 else f"num_train_epochs {sft.num_train_epochs:g}"
    return (f"[genqa] {out} holds a finished run (step {done['global_step']}, epoch {float(done.get('epoch') or 0):g};"
            f" this command asks for {asked}): nothing to train, nothing changed. To train it further raise "
            "max_steps / num_train_epochs (it resumes from its last checkpoint), or choose another output_dir.")


def prepare_output_dir(sft: SFTConfig) -> str | None:
    """Create the output folder; return the checkpoint to resume from (explicit, or the newest complete one).

    A folder holding a finished model or checkpoints is never trained over from scratch: genqa resumes, or refuses.
    Incomplete checkpoints (a save cut short) are never resumed from: they are named and set aside.
    """
    out = Path(sft.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = sft.resume_from_checkpoint
    last, incomplete = find_checkpoints(out)
    trained = any(out.glob("adapter_model.safetensors")) or any(out.glob("model*.safetensors"))
    if _never(wanted):
        if trained or last or incomplete:
            raise RecipeError(f"output_dir {out} already holds a trained model or checkpoints; starting over "
                              "(`resume_from_checkpoint: never`) would overwrite them. Choose another output_dir or "
                              "remove that folder.")
        return None
    if isinstance(wanted, str) and wanted.lower() not in ("true", "auto", "latest", "last"):
        problem = checkpoint_problem(Path(wanted)) if Path(wanted).is_dir() else "not a checkpoint folder"
        if problem:
            raise RecipeError(f"resume_from_checkpoint: {wanted} cannot be resumed from ({problem}).")
        say(f"[genqa] resuming from {wanted}")
        return wanted
    set_aside(incomplete)
    if last is not None:
        say(f"[genqa] resuming from the last checkpoint in {out}: {last} (the newest complete one; use another "
            "output_dir to start over)")
        return str(last)
    if trained:
        done = read_finished(out)
        what = f"a run finished at step {done['global_step']}" if done else "a trained model"
        raise RecipeError(f"output_dir {out} already holds {what} and no checkpoint to resume from (trained with "
                          "save_strategy: no?), so it cannot be trained further; choose another output_dir or remove "
                          "it (genqa does not overwrite a finished run).")
    if wanted:
        say(f"[genqa] no checkpoint in {out} yet: starting from scratch")
    return None


# Keys that may change when a run is resumed (how long, how often to log/save/evaluate, where to report).
RUN_CONTROL_KEYS = {
    "output_dir", "max_steps", "num_train_epochs", "resume_from_checkpoint", "logging_steps", "logging_dir",
    "save_steps", "save_strategy", "save_total_limit", "eval_steps", "eval_strategy", "report_to", "run_name",
    "disable_tqdm", "dataloader_num_workers", "per_device_eval_batch_size", "generation_eval_samples",
    "generation_eval_max_new_tokens", "max_new_tokens", "dry_run", "use_cpu", "logging_first_step", "logging_strategy",
}


def check_resumed_recipe(output_dir: str, recipe: dict[str, Any]) -> None:
    """Refuse to resume a run with a recipe that differs from the one it was trained with (except run control)."""
    path = Path(output_dir) / RECIPE_FILE
    if not path.is_file():
        return
    saved = read_yaml(path)
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
        # the run folder's tokenizer carries the template it was trained with, without transformers' `{% generation %}`
        # tags (same text): servers that render it with another Jinja engine (TGI's minijinja) reject those tags
        tokenizer.chat_template = portable_template(template)
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


class NothingToTrain(Exception):
    """Raised by `StopIfTrained` to leave `Trainer.train` before its first step."""


class StopIfTrained(TrainerCallback):
    """Stops `Trainer.train` at its start when the checkpoint it resumed from already reached `max_steps`.

    Trainer has no way to say "nothing left to train": resumed at step 40 of 40 with 3 steps per epoch it runs epoch
    13 from its second batch, training step 41 before it checks `max_steps`. At `on_train_begin` the checkpoint's
    weights, optimizer and state are loaded, so the final files can be written from it instead."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.max_steps > 0 and state.global_step >= state.max_steps:
            raise NothingToTrain(f"step {state.global_step}, max_steps {state.max_steps}")


def train_and_finish(trainer, resume: str | bool | None, tokenizer, qa: QAArguments, sft: SFTConfig,
                     model_args: ModelConfig, reports: list, validation: Dataset | None, backbone) -> str:
    """Train (resuming from `resume`, as `start_run` returned it) after checking accelerate kept its promise of FSDP,
    then save everything with `finish_run` and mark the run finished; returns the run folder. Every trainer ends here
    (`genqa.backbones.training`); `backbone` is the backbone module, whose name and pipeline tag the card shows."""
    check_fsdp(trainer)
    say(f"[genqa] model: {trainable_parameters(trainer.model)}")
    if is_main_process():  # the final files are about to change: the run is not finished until they are all written
        (Path(sft.output_dir) / FINISHED_FILE).unlink(missing_ok=True)
    attach_run_card(trainer, qa, sft, model_args, reports, backbone)
    trainer.add_callback(StopIfTrained())
    for callback in stopping_callbacks(qa):  # max_train_minutes, early_stopping_patience
        trainer.add_callback(callback)
    try:
        trainer.train(resume_from_checkpoint=resume)
    except NothingToTrain as reached:
        say(f"[genqa] {resume} already reached the end of training ({reached}): nothing to train; writing the run's "
            "final files from it")
    folder = finish_run(trainer, tokenizer, qa, sft, model_args, reports, validation, backbone)
    if trainer.is_world_process_zero():
        state = trainer.state
        write_atomic(Path(folder) / FINISHED_FILE, json.dumps({
            "global_step": state.global_step, "epoch": state.epoch, "max_steps": state.max_steps,
            "num_train_epochs": state.num_train_epochs, "stopped_early": state.global_step < state.max_steps}))
    return folder


def finish_run(trainer, tokenizer, qa: QAArguments, sft: SFTConfig, model_args: ModelConfig, reports: list,
               validation: Dataset | None, backbone) -> str:
    """Save the model (adapter or full), trainer state, tokenizer and genqa's files; returns the run folder."""
    trainer.save_model(sft.output_dir)
    trainer.save_state()
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(sft.output_dir)
    save_run_files(sft.output_dir, qa, sft, model_args, reports, validation)
    finish_run_card(trainer, qa, sft, model_args, reports, backbone)
    return sft.output_dir
