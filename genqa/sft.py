"""Train a QA recipe: `accelerate launch -m genqa.sft RECIPE.yaml [--key value ...]`.

recipe → data source → task → template → tokenization (response-only labels) → backbone trainer → run folder.
The backbone (`genqa.backbones`: causal LM with TRL's `SFTTrainer`, T5 seq2seq, extractive encoder) is read from the
recipe or detected from the model, and trains through its module's `train`.
`--dry_run` validates the recipe and prints the resolved configuration without loading a model or data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from genqa.backbones import get_backbone
from genqa.backbones.loading import check_model_name
from genqa.backbones.tiny import is_tiny
from genqa.config import QAArguments
from genqa.data.sources import detect_format, header_columns
from genqa.data.tasks import get_task
from genqa.data.templates import TemplateError, load_template
from genqa.errors import DataError, report_errors
from genqa.files import unwritable
from genqa.messages import begin_run_log, quiet_known_noise, say
from genqa.recipe import RecipeError, load_recipe_file, non_default_items, parse_recipe, read_yaml, training_mode
from genqa.stopping import early_stopping_problems


def torch_cuda_available() -> bool:
    """True when a CUDA device is usable."""
    import torch

    return torch.cuda.is_available()


def validate(qa: QAArguments, sft, model_args, recipe_path: str | None) -> list[str]:
    """Problems found without loading a model or data (empty list: the recipe is consistent)."""
    where = recipe_path or "command line"
    problems = []
    if not model_args.model_name_or_path:
        problems.append(f"{where}: `model_name_or_path` is not set.")
    try:
        check_model_name(model_args.model_name_or_path)
    except RecipeError as err:
        problems.append(f"{where}: {err}")
    if not qa.dataset_path:
        problems.append(f"{where}: `dataset_path` is not set.")
    elif not Path(qa.dataset_path).exists() and qa.dataset_format not in ("hub",):
        try:
            if qa.dataset_format == "auto":
                detect_format(qa.dataset_path)
            else:
                raise DataError(f"dataset_path {qa.dataset_path} not found.")
        except DataError as err:
            # Not fatal for a dry run: recipes name the user's own files, which may live elsewhere.
            print(f"[genqa] warning: {where}: {err} Training will fail until it exists.", file=sys.stderr)
    if qa.backbone == "auto" or get_backbone(qa.backbone).USES_TEMPLATE:
        try:
            load_template(qa.template)
        except TemplateError as err:
            problems.append(f"{where}: template: {err}")
    problems += task_problems(qa, where)
    if sft.max_length is not None and sft.max_length < 16:
        problems.append(f"{where}: max_length={sft.max_length} leaves no room for a prompt and an answer.")
    if (model_args.load_in_4bit or model_args.load_in_8bit) and not model_args.use_peft:
        problems.append(f"{where}: a quantized model cannot be trained in full; set `use_peft: true` (QLoRA).")
    problems += [f"{where}: output_dir: {p}; choose another output_dir." for p in output_dir_problems(sft)]
    problems += [f"{where}: {p}" for p in report_to_problems(sft.report_to)]
    problems += [f"{where}: {p}" for p in early_stopping_problems(qa, sft)]
    return problems


def task_problems(qa: QAArguments, where: str) -> list[str]:
    """What the task lacks in the recipe and the data's header; its warnings are printed."""
    try:
        task = get_task(qa)
        problems = task.recipe_problems() + column_problems(qa, task)
    except DataError as err:
        return [f"{where}: {err}"]
    for warning in task.recipe_warnings():
        print(f"[genqa] warning: {where}: {warning}", file=sys.stderr)
    return [f"{where}: {p}" for p in problems]


def column_problems(qa: QAArguments, task) -> list[str]:
    """A column the recipe maps that the training data's header lacks, named with the columns it has (the header
    only: no rows are read). Empty when the columns are only known after loading (hub, SQuAD, C3, saved folders) or
    the file is not there."""
    if not qa.dataset_path or qa.dataset_format == "hub":
        return []
    try:
        columns = header_columns(qa.dataset_path, qa.dataset_format)
        if columns is not None:
            task.check_columns(columns, qa.dataset_path, require_answer=True)
    except DataError as err:
        return [] if "not found" in str(err) or "no file matches" in str(err) else [str(err)]
    return []


def output_dir_problems(sft) -> list[str]:
    """Why the run folder could not be written (a file in its place or above it, a folder that is not writable)."""
    problem = unwritable(sft.output_dir, folder=True) if sft.output_dir else None
    return [problem] if problem else []


def report_to_problems(report_to: list[str] | str | None) -> list[str]:
    """Trackers in `report_to` that transformers does not know or that are not installed (transformers itself fails
    only when the trainer is built, after the data has been read and tokenized)."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [n for n in names if n not in ("none", "all")]
    installed = set(get_available_reporting_integrations())
    problems = []
    for name in names:
        if name not in INTEGRATION_TO_CALLBACK:
            problems.append(f"report_to: unknown tracker `{name}`; choose from {', '.join(INTEGRATION_TO_CALLBACK)} "
                            "or `none`.")
        elif name not in installed and name != "flyte":
            extra = " (`pip install \"genqa[tracking]\"`)" if name == "tensorboard" else ""
            problems.append(f"report_to: `{name}` is not installed; install it{extra} or set `report_to: none`.")
    return problems


def print_resolved(qa, sft, model_args, recipe_path: str | None) -> None:
    """Print the recipe as genqa will run it: every genqa and model key, and the training keys set."""
    training = non_default_items(sft)
    training.update(output_dir=sft.output_dir, max_length=sft.max_length, learning_rate=sft.learning_rate,
                    num_train_epochs=sft.num_train_epochs, max_steps=sft.max_steps, seed=sft.seed)
    doc = {"recipe": recipe_path, "genqa": non_default_items(qa) | {"task": qa.task, "template": qa.template},
           "model": {k: v for k, v in non_default_items(model_args).items()} | {
               "model_name_or_path": model_args.model_name_or_path}, "training": training}
    print(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def explicit_keys(argv: list[str], recipe_path: str | None) -> set[str]:
    """Keys the user set (recipe file or command line), as opposed to library defaults."""
    keys = {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}
    return keys | (set(load_recipe_file(recipe_path)) if recipe_path else set())


def apply_precision(sft, explicit: set[str], saved: dict | None = None) -> None:
    """Decide bf16 for this machine (`genqa.hardware`: measured on a CPU) and say what was chosen and why; a resumed
    run keeps the precision it started with (`saved`: its recipe) unless the command line says otherwise."""
    from genqa.hardware import fit_threads, precision_for

    say(f"[genqa] {fit_threads()}")
    if sft.fp16:
        return
    kept = "bf16" not in explicit and (saved or {}).get("bf16") is not None  # decided when the run first started
    requested = bool(sft.bf16) if "bf16" in explicit else (saved or {}).get("bf16")
    choice = precision_for(requested, use_cpu=bool(sft.use_cpu))
    sft.bf16 = choice.bf16
    sft.mixed_precision = "bf16" if choice.bf16 else "no"
    reason = (f"as this run started (its genqa_recipe.yaml records bf16: {str(choice.bf16).lower()}; the recipe does "
              "not set bf16)") if kept else choice.reason
    say(f"[genqa] precision: {'bf16 autocast' if choice.bf16 else 'fp32'} -- {reason}")
    if choice.warning:
        print(f"[genqa] warning: {choice.warning}", file=sys.stderr)


def saved_recipe(output_dir: str | None) -> dict:
    """The resolved recipe of a run already in `output_dir` (empty when there is none)."""
    from genqa.run_dir import RECIPE_FILE

    path = Path(output_dir or "") / RECIPE_FILE
    return read_yaml(path) if output_dir and path.is_file() else {}


#: where the recipe does not say: log every 5% of the training steps (transformers reads a value below 1 as a ratio)
DEFAULT_LOGGING_STEPS = 0.05

#: the keys that say how activation checkpointing runs; a recipe that sets none of them gets genqa's default
CHECKPOINTING_KEYS = {"activation_checkpointing", "gradient_checkpointing", "activation_checkpointing_kwargs",
                      "gradient_checkpointing_kwargs"}


def apply_speed_defaults(sft, explicit: set[str]) -> None:
    """Training defaults genqa sets where the recipe does not: precision (above); batches of similar lengths
    (`train_sampling_strategy: group_by_length`), so a batch pads to a length near its rows' own rather than to the
    longest of a random draw (exact: only the order rows are drawn in changes); and activation checkpointing on every
    second decoder layer (`every_n_layers: 2`) instead of every one: a recipe that says nothing about checkpointing
    gets 1.15-1.17x the speed of full checkpointing at 0.86x TRL's peak memory (measured on SmolLM2; checkpointing
    changes memory and time, not the numbers). A resumed run keeps what it started with.
    `benchmarks/train_speed.py` measures them against plain TRL and the padded loop."""
    saved = saved_recipe(sft.output_dir)
    apply_precision(sft, explicit, saved)
    if "logging_steps" not in explicit:  # 20 points on the loss plot, however long the run (a ratio of its steps)
        sft.logging_steps = saved.get("logging_steps", DEFAULT_LOGGING_STEPS)
    if "train_sampling_strategy" not in explicit and not sft.packing and not sft.padding_free:
        sft.train_sampling_strategy = saved.get("train_sampling_strategy", "group_by_length")
    if not CHECKPOINTING_KEYS & explicit and sft.activation_checkpointing and not sft.activation_checkpointing_kwargs:
        sft.activation_checkpointing_kwargs = saved.get("activation_checkpointing_kwargs") or {"every_n_layers": 2}


def run(argv: list[str]) -> int:
    """Parse, validate and train (or only print, with `--dry_run`)."""
    begin_run_log()
    qa, sft, model_args, recipe_path = parse_recipe(argv)
    model_args.trust_remote_code = bool(getattr(sft, "trust_remote_code", False))
    problems = validate(qa, sft, model_args, recipe_path)
    if problems:
        raise RecipeError("\n".join(problems))
    say(f"[genqa] training: {training_mode(model_args)}")
    apply_speed_defaults(sft, explicit_keys(argv, recipe_path))
    if qa.dry_run:
        print_resolved(qa, sft, model_args, recipe_path)
        print(f"[genqa] recipe {recipe_path or '(command line)'} is valid.")
        return 0
    if is_tiny(model_args.model_name_or_path):
        say(f"[genqa] {model_args.model_name_or_path}: a tiny model built offline by genqa -- a pipeline check, "
            "not a useful model.")
    from genqa.backbones.loading import detect_backbone
    from genqa.backbones.training import train
    from genqa.locks import output_lock
    from genqa.run_dir import LOCK_FILE, finished_run_message

    with output_lock(Path(sft.output_dir) / LOCK_FILE, f"output_dir {sft.output_dir}"):  # one writer per run folder
        finished = finished_run_message(qa, sft, model_args)
        if finished:
            say(finished)
            return 0
        backbone = get_backbone(detect_backbone(model_args.model_name_or_path, qa.backbone,
                                                model_args.trust_remote_code))
        out = train(backbone, qa, sft, model_args, recipe_path)
    say(f"[genqa] run folder: {out}")
    say(f"[genqa] next: {next_command(out, bool(model_args.use_peft))}")
    end_process_group(wait_for_all=True)
    return 0


def next_command(run: str, adapter: bool) -> str:
    """What a user runs after training: merge an adapter (checked), or predict with a fully trained model."""
    if adapter:
        return f"genqa merge --adapter {run} --out {Path(run) / 'merged'}"
    return f"genqa predict --base {run} --data YOUR_TEST_FILE --out submission.csv"


def main(argv: list[str] | None = None) -> int:
    """Entry point of `genqa train` / `python -m genqa.sft` / `accelerate launch -m genqa.sft`."""
    from genqa.cli import print_train_help, wants_train_help

    argv = list(sys.argv[1:] if argv is None else argv)
    if wants_train_help(argv):
        return print_train_help(argv)
    quiet_known_noise()
    if not torch_cuda_available() and not any(a.startswith("--use_cpu") for a in argv):
        argv += ["--use_cpu", "true"]  # no GPU: train on the CPU (bf16 and multi-process DDP need it, shared NOTES)
    try:
        return report_errors("genqa.sft", lambda: run(argv))
    finally:
        end_process_group(wait_for_all=False)


def end_process_group(wait_for_all: bool) -> None:
    """Leave the distributed process group, if a launch started one, before the interpreter exits.

    After a successful run every rank first waits for the others (rank 0 is still writing the run folder when the
    others are done): a gloo rank that tears its connections down while another still uses them, or exits with the
    group alive, can abort ("terminate called without an active exception") after the run has finished, failing the
    launch. On an error path ranks don't wait, so a failure on one rank can't turn into a hang.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())

