"""A training time budget (`max_train_minutes`): stop after so many minutes of training steps, saved as a finished
run. transformers has step and epoch limits only; a CPU user knows how long they can wait, not how many steps fit."""

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
