"""The `genqa` command: subcommands, fast help (nothing heavy imported before parsing), report_to checks, quiet
logging at the source."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys

import pytest

from genqa.cli import COMMANDS, KEY_GROUPS, main, train_help_parser
from genqa.config import QAArguments
from genqa.messages import HARMLESS, quiet_known_noise

HEAVY = ("torch", "transformers", "trl", "datasets", "peft")


def _fresh_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["", "train", "preview", "merge", "export", "predict", "eval", "env"])
def test_help_imports_no_model_library(command):
    args = [command, "--help"] if command else ["--help"]
    proc = _fresh_python(
        f"import sys\nfrom genqa.cli import main\ntry:\n    main({args!r})\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', [m for m in {HEAVY!r} if m in sys.modules])")
    assert proc.returncode == 0, proc.stderr
    assert "usage: genqa" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]


def test_python_dash_m_genqa_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "genqa", "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for name in COMMANDS:
        assert f"  {name} " in proc.stdout


def test_train_help_shows_recipe_config_groups_and_help_all(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "RECIPE" in out.split("options:")[0]  # the positional recipe, before the options
    assert "--config RECIPE" in out
    for group in ("data", "columns", "task", "template", "backbone", "submission"):
        assert f"genqa keys: {group}:" in out
    assert "genqa train --help-all" in out
    assert len(out.splitlines()) < 250


def test_every_qa_key_is_in_exactly_one_help_group():
    grouped = [k for keys in KEY_GROUPS.values() for k in keys]
    assert sorted(grouped) == sorted(f.name for f in dataclasses.fields(QAArguments))
    train_help_parser()  # builds without a duplicate option


def test_sft_module_help_is_the_same_short_help(capsys):
    from genqa.sft import main as sft_main

    assert sft_main(["--help"]) == 0
    assert "genqa keys: columns:" in capsys.readouterr().out


def test_unknown_command_is_a_clear_error(capsys):
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command `trian`" in err and "Did you mean `train`?" in err


def test_env_names_torch_and_transformers_versions():
    import torch
    import transformers

    proc = subprocess.run([sys.executable, "-m", "genqa", "env"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"torch {torch.__version__}" in proc.stdout
    assert f"transformers {transformers.__version__}" in proc.stdout


def test_report_to_unknown_or_missing_tracker_is_refused_in_dry_run(capsys):
    from transformers.integrations.integration_utils import get_available_reporting_integrations

    from genqa.sft import report_to_problems

    assert report_to_problems(["none"]) == [] and report_to_problems("tensorboard") == []
    assert main(["train", "recipes/tiny/mcq.yaml", "--dry_run", "--report_to", "tensorbord"]) == 2
    assert "unknown tracker `tensorbord`" in capsys.readouterr().err
    missing = next((n for n in ("wandb", "mlflow", "comet_ml", "neptune")
                    if n not in get_available_reporting_integrations()), None)
    if missing is None:
        pytest.skip("every tracker checked is installed here")
    assert main(["train", "recipes/tiny/mcq.yaml", "--dry_run", "--report_to", missing]) == 2
    assert f"`{missing}` is not installed" in capsys.readouterr().err


def test_known_harmless_messages_are_dropped_at_their_source_only(monkeypatch):
    monkeypatch.delenv("GENQA_VERBOSE", raising=False)
    quiet_known_noise()
    source, pattern = next(h for h in HARMLESS if h[0] == "DeepSpeed")
    logger = logging.getLogger(source)
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    try:
        logger.warning("Setting accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it.")
        logger.warning("something else DeepSpeed wants you to see")
    finally:
        logger.removeHandler(handler)
    assert seen == ["something else DeepSpeed wants you to see"]
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_known_noise()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                      stacklevel=1)
        warnings.warn("another FutureWarning", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["another FutureWarning"]
