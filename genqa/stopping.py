"""When training stops before `max_steps` / `num_train_epochs`: a time budget and early stopping, for every backbone.

- `max_train_minutes`: stop after so many minutes of training steps. transformers has step and epoch limits only; a
  CPU user knows how long they can wait, not how many steps fit. Hand-written for that reason (`TimeBudget`).
- `early_stopping_patience`: transformers' own `EarlyStoppingCallback`, on the recipe's `metric_for_best_model`
  (`eval_loss`, or a task metric `eval_gen_f1` / `eval_gen_accuracy` with `generation_eval_samples`).

A run that stops this way is finished: the run folder records it (`stopped_early`), and rerunning the same command
changes nothing (`genqa.run_dir.finished_run_message`).
"""

from __future__ import annotations

import time

from transformers import TrainerCallback


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
    """The callbacks that end training early, as the recipe asks (`max_train_minutes`, `early_stopping_patience`)."""
    callbacks: list[TrainerCallback] = []
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
