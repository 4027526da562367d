"""The `genqa` command: one entry point whose subcommands are genqa's module entry points.

    genqa train RECIPE [--key value ...]     = python -m genqa.sft (accelerate launch -m genqa.sft keeps working)
    genqa preview RECIPE [-n 3]              rows rendered as training encodes them, trained tokens marked
    genqa merge --adapter RUN --out DIR      = python -m genqa.merge
    genqa export --adapter RUN --out F.gguf  = python -m genqa.export (GGUF + Ollama Modelfile, checked)
    genqa predict --base DIR --data F --out  = python -m genqa.generate
    genqa eval --data F --predictions P      = python -m genqa.evaluate
    genqa env                                versions, CPU / GPU, bf16, bitsandbytes / DeepSpeed: for bug reports

Every subcommand module is imported only once its name is known, and each parses its arguments before loading any
model library, so `genqa --help` and `genqa SUB --help` answer without importing torch, transformers or datasets.
`genqa train --help` is written here from `QAArguments` alone (the training and model keys are TRL's dataclasses,
whose import costs seconds: `genqa train --help-all` lists them).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import os
import sys
from collections.abc import Sequence

from genqa.config import QAArguments
from genqa.messages import VERBOSE_ENV, quiet_known_noise

#: subcommand -> ("module:function" taking argv and returning an exit code, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("genqa.starter:main", "write a starter recipe from a data file's header (columns guessed, LoRA on)"),
    "train": ("genqa.sft:main", "train a recipe (LoRA / QLoRA / full) into a run folder"),
    "preview": ("genqa.preview:main", "show rows as training encodes them, trained tokens marked (no model loaded)"),
    "merge": ("genqa.merge:main", "fold a run's adapter into its base, checked against the adapter"),
    "export": ("genqa.export:main", "write a run as one GGUF file for llama.cpp / Ollama, checked to answer the same"),
    "predict": ("genqa.generate:main", "predict a test file: submission CSV or SQuAD JSON, metrics when labelled"),
    "eval": ("genqa.evaluate:main", "score a predictions file (SQuAD EM/F1, MCQ accuracy, MCQ-generation layout)"),
    "env": ("genqa.hardware:main", "versions, CPU / GPU, bf16, bitsandbytes / DeepSpeed: paste into bug reports"),
}

#: QAArguments fields by help group, in the order `genqa train --help` shows them
KEY_GROUPS: dict[str, tuple[str, ...]] = {
    "data": ("dataset_path", "dataset_format", "dataset_config", "train_split", "eval_split", "validation_size",
             "split_by", "split_seed", "max_train_samples", "max_eval_samples", "on_bad_row"),
    "columns": ("id_column", "context_column", "question_column", "answer_column", "answer_start_column",
                "options_columns", "options_column", "options_in_question", "question_number_pattern"),
    "task": ("task", "instruction", "prompt_format", "no_answer_text", "option_labels", "mcq_question_prefix",
             "mcq_answer_prefix", "mcq_mode", "generation_eval_samples", "generation_eval_max_new_tokens",
             "metric_lang", "max_new_tokens"),
    "template": ("template", "system_prompt"),
    "backbone": ("backbone", "gguf_file", "doc_stride", "max_answer_length", "n_best_size", "null_score_diff_threshold",
                 "max_target_length", "constrain_to_context", "nearest_span", "constrain_to_layout",
                 "key_from_context", "no_answer_threshold"),
    "submission": ("submission_id_column", "submission_answer_column"),
    "run": ("dry_run", "max_train_minutes", "early_stopping_patience"),
}

TRAINING_KEYS_NOTE = """\
training and model keys:
  Every field of TRL's SFTConfig (training: output_dir, max_length, learning_rate, num_train_epochs, max_steps,
  per_device_train_batch_size, gradient_accumulation_steps, eval_strategy, save_strategy, report_to,
  metric_for_best_model, load_best_model_at_end, push_to_hub, hub_model_id, bf16, seed, ...) and ModelConfig
  (model: model_name_or_path, dtype, attn_implementation, use_peft, lora_r, lora_alpha, lora_dropout,
  lora_target_modules, use_rslora, use_dora, load_in_4bit, bnb_4bit_quant_type, ...) is a recipe key too.
  `genqa train --help-all` lists them all with their defaults (it imports TRL: a few seconds).

examples:
  genqa train recipes/tiny/mcq.yaml --dry_run                # validate + print the resolved recipe, no model
  genqa train recipes/vi_mcq.yaml --learning_rate 1e-4 --output_dir runs/x
  accelerate launch --config_file accelerate_configs/ddp.yaml -m genqa.sft recipes/vi_mcq.yaml
"""


def train_help_parser() -> argparse.ArgumentParser:
    """The parser that documents `genqa train` (parsing itself is TRL's TrlParser, in `genqa.recipe`)."""
    p = argparse.ArgumentParser(
        prog="genqa train", add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="genqa train RECIPE.yaml [--key value ...]   (or: accelerate launch -m genqa.sft RECIPE.yaml ...)",
        description="Train a recipe: data source -> task -> template -> tokenization -> trainer -> run folder. Any "
                    "recipe key can be overridden on the command line; rerunning the same command resumes.",
        epilog=TRAINING_KEYS_NOTE)
    p.add_argument("recipe", metavar="RECIPE", help="the YAML recipe (positional), e.g. recipes/tiny/mcq.yaml")
    p.add_argument("--config", metavar="RECIPE", help="the same recipe, as a flag (TRL's spelling)")
    p.add_argument("-h", "--help", action="store_true", help="this help (genqa's keys)")
    p.add_argument("--help-all", action="store_true", help="every key: genqa's, training (SFTConfig) and model")
    p.add_argument("--verbose", action="store_true", help="show every library message and progress bar")
    fields = {f.name: f for f in dataclasses.fields(QAArguments)}
    for group, names in KEY_GROUPS.items():
        g = p.add_argument_group(f"genqa keys: {group}")
        for name in names:
            f = fields[name]
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            shown = "" if default in (None, False, "") else f" (default: {default})"
            g.add_argument(f"--{name}", metavar="V", help=f"{f.metadata.get('help', '')}{shown}".replace("%", "%%"))
    return p


def print_train_help(argv: Sequence[str]) -> int:
    """`genqa train --help` (genqa's keys, grouped) or `--help-all` (TRL's full listing); returns 0."""
    if "--help-all" in argv:
        from trl import TrlParser

        from genqa.recipe import RECIPE_DATACLASSES

        TrlParser(RECIPE_DATACLASSES, prog="genqa train").print_help()
    else:
        train_help_parser().print_help()
    return 0


def wants_train_help(argv: Sequence[str]) -> bool:
    """True when a `train` command line asks for help rather than a run."""
    return any(a in ("-h", "--help", "--help-all") for a in argv)


def top_parser() -> argparse.ArgumentParser:
    """`genqa [--verbose] COMMAND ...`: the subcommands and what they do."""
    width = max(map(len, COMMANDS))
    listing = "\n".join(f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items())
    p = argparse.ArgumentParser(
        prog="genqa", formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="genqa [--verbose] COMMAND [ARGS ...]",
        description="genqa: fine-tuning recipes for question answering.",
        epilog=f"commands:\n{listing}\n\n`genqa COMMAND --help` (or `genqa help COMMAND`) for a command's options. "
               "`python -m genqa` works too.")
    p.add_argument("--verbose", action="store_true", help="show every library message and progress bar")
    p.add_argument("--version", action="version", version=f"genqa {version()}")
    return p


def version() -> str:
    """The installed genqa version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("genqa")
    except PackageNotFoundError:
        return "(not installed)"


def _split(argv: list[str]) -> tuple[list[str], str | None, list[str]]:
    """(genqa's own options, the subcommand, the subcommand's arguments)."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return argv[:i], arg, argv[i + 1:]
    return argv, None, []


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `genqa` command and of `python -m genqa`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    own, command, rest = _split(argv)
    parser = top_parser()
    options = parser.parse_args(own)  # --help / --version exit here
    if "--verbose" in rest:
        rest.remove("--verbose")
        options.verbose = True
    if options.verbose:
        os.environ[VERBOSE_ENV] = "1"
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    if command == "help":  # `genqa help [COMMAND]`, as `llamafactory-cli help` and `git help`
        if not rest:
            parser.print_help()
            return 0
        command, rest = rest[0], ["--help"]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" Did you mean `{close[0]}`?" if close else ""
        print(f"genqa: error: unknown command `{command}`.{hint} Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    if command == "train" and wants_train_help(rest):
        return print_train_help(rest)
    quiet_known_noise()
    module, function = COMMANDS[command][0].split(":")
    return int(getattr(importlib.import_module(module), function)(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
