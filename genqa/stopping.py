"""When training stops before `max_steps` / `num_train_epochs`: a time budget and early stopping, for every backbone.

- `max_train_minutes`: stop after so many minutes of training steps. transformers has step and epoch limits only; a
  CPU user knows how long they can wait, not how many steps fit. Hand-written for that reason (`TimeBudget`).
- `early_stopping_patience`: transformers' own `EarlyStoppingCallback`, on the recipe's `metric_for_best_model`
  (`eval_loss`, or a task metric `eval_gen_f1` / `eval_gen_accuracy` with `generation_eval_samples`).

- a training whose weights stop being finite numbers (a loss that became NaN or inf: a learning rate far too high,
  fp16 overflow) stops at once with an error naming the step (`StopOnNonFinite`); no checkpoint of that step is
  written and the run is not marked finished.

A run that stops early on purpose is finished: the run folder records it (`stopped_early`), and rerunning the same
command changes nothing (`genqa.run_dir.finished_run_message`).
"""

from __future__ import annotations

import time

from transformers import TrainerCallback

from genqa.errors import GenqaError


class TrainingDiverged(GenqaError, RuntimeError):
    """The trained weights became NaN or inf."""


class StopOnNonFinite(TrainerCallback):
    """Raises `TrainingDiverged` at the end of the first step after which a trained weight is NaN or inf (checked
    before that step's checkpoint is saved). Trainer's own `logging_nan_inf_filter` hides such losses from the log,
    so the weights are checked instead: the trainable ones only, which a LoRA run keeps small."""

    def on_step_end(self, args, state, control, model=None, **kwargs):
        import torch

        if model is None:
            return control
        trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad and p.numel()]
        if not trained:
            return control
        with torch.no_grad():  # one fused check and a single device sync per step; names only once it failed
            device = trained[0][1].device
            finite = torch.stack([torch.isfinite(p).all().to(device, non_blocking=True) for _, p in trained]).all()
            if bool(finite):
                return control
            bad = next(name for name, p in trained if not bool(torch.isfinite(p).all()))
        raise TrainingDiverged(
            f"training diverged at step {state.global_step}: the weight {bad} is NaN or inf (the loss became NaN "
            f"or inf; learning_rate {args.learning_rate:g} may be far too high). The run is not finished and no "
            "checkpoint of this step was saved; lower learning_rate (or use another output_dir) and rerun.")


class TimeBudget(TrainerCallback):
    """Ends training at the first step boundary after `minutes` of training (evaluation and saving included)."""

    def __init__(self, minutes: float) -> None:
        self.seconds, self.start = 60.0 * minutes, None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.start is not None and time.monotonic() - self.start >= self.seconds:
            control.should_training_stop = True
            control.should_save = True
        return control


def stopping_callbacks(qa) -> list[TrainerCallback]:
    """The callbacks that end training early: on weights that are no longer finite, and as the recipe asks
    (`max_train_minutes`, `early_stopping_patience`)."""
    callbacks: list[TrainerCallback] = [StopOnNonFinite()]
    if qa.max_train_minutes:
        callbacks.append(TimeBudget(qa.max_train_minutes))
    if qa.early_stopping_patience:
        from transformers import EarlyStoppingCallback

        callbacks.append(EarlyStoppingCallback(early_stopping_patience=qa.early_stopping_patience))
    return callbacks


def early_stopping_problems(qa, sft) -> list[str]:
    """What `early_stopping_patience` needs from the training keys (checked by `--dry_run`)."""
    if not qa.early_stopping_patience:
        return []
    evaluates = str(getattr(sft.eval_strategy, "value", sft.eval_strategy)) != "no"
    missing = [k for k, ok in (("load_best_model_at_end: true", sft.load_best_model_at_end),
                               ("an eval_strategy other than 'no'", evaluates),
                               ("metric_for_best_model", bool(sft.metric_for_best_model))) if not ok]
    if missing:
        return [f"early_stopping_patience: {qa.early_stopping_patience} needs {', '.join(missing)} (early stopping "
                "compares evaluations of metric_for_best_model and keeps the best checkpoint)."]
    return []
