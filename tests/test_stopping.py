"""Training that stops before max_steps on purpose (early stopping, a time budget) is a finished run."""

from __future__ import annotations

import json

import pytest

from genqa.sft import main

pytestmark = pytest.mark.slow


def test_early_stopping_on_a_task_metric_ends_a_finished_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["recipes/tiny/mcq.yaml", "--output_dir", str(out), "--max_steps", "30", "--eval_strategy", "steps",
            "--eval_steps", "1", "--save_steps", "1", "--save_total_limit", "2", "--generation_eval_samples", "3",
            "--metric_for_best_model", "eval_gen_accuracy", "--load_best_model_at_end", "true",
            "--early_stopping_patience", "1"]
    assert main(argv) == 0
    finished = json.loads((out / "genqa_finished.json").read_text(encoding="utf-8"))
    # accuracy on 3 rows takes 4 values, so it cannot rise at 30 evaluations in a row: patience 1 stops it early
    assert finished["stopped_early"] and finished["global_step"] < 30
    state = json.loads((out / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["best_model_checkpoint"] is not None
    weights = (out / "adapter_model.safetensors").read_bytes()
    capsys.readouterr()
    assert main(argv) == 0  # the same command again: finished, nothing trained, nothing changed
    assert "holds a finished run" in capsys.readouterr().out
    assert (out / "adapter_model.safetensors").read_bytes() == weights


def test_early_stopping_needs_best_model_keys(capsys):
    rc = main(["recipes/tiny/mcq.yaml", "--early_stopping_patience", "2", "--dry_run", "true"])
    err = capsys.readouterr().err
    assert rc == 2 and "early_stopping_patience" in err and "load_best_model_at_end" in err


def test_a_diverging_training_stops_naming_the_step_and_is_not_finished(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["recipes/tiny/mcq.yaml", "--output_dir", str(out), "--max_steps", "6", "--save_steps", "1",
               "--learning_rate", "1e30", "--max_grad_norm", "0"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "genqa.sft: error: training diverged at step 2" in err and "is NaN or inf" in err, err  # LoRA B is 0 at 1
    assert not (out / "genqa_finished.json").exists() and not (out / "checkpoint-2").exists()
    assert (out / "checkpoint-1").is_dir()  # the last finite step stays resumable


@pytest.mark.parametrize("poisoned", [None, "1.weight"])
def test_non_finite_check_syncs_once_per_step(monkeypatch, poisoned):
    """One device sync per step for all trainable tensors (not one per tensor); a NaN is still named."""
    import torch
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from genqa.stopping import StopOnNonFinite, TrainingDiverged

    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(6)])
    model[0].weight.requires_grad_(False)
    if poisoned:
        with torch.no_grad():
            model[1].weight[0, 0] = float("nan")
    syncs = []
    real_bool = torch.Tensor.__bool__
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: syncs.append(1) or real_bool(self))
    args, state = TrainingArguments(output_dir="unused", report_to=[]), TrainerState(global_step=3)
    if poisoned:
        with pytest.raises(TrainingDiverged, match=r"step 3: the weight 1\.weight is NaN"):
            StopOnNonFinite().on_step_end(args, state, TrainerControl(), model=model)
    else:
        StopOnNonFinite().on_step_end(args, state, TrainerControl(), model=model)
        assert len(syncs) == 1
