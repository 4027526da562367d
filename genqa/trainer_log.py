"""What a training run logs while it trains: one JSON line per trainer log event in `trainer_log.jsonl` (and a line in
`genqa.log`), one clean console line per event instead of a dict of strings, token counts and the mean loss that
cover the whole run however many processes it took (a resumed run continues its checkpoint's figures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from genqa.files import open_append
from genqa.messages import log_line, say

TRAINER_LOG_FILE = "trainer_log.jsonl"


class RunLogCallback(TrainerCallback):
    """Appends every log event to `trainer_log.jsonl` and a one-line form of it to `genqa.log` (main process)."""

    def __init__(self, output_dir: str) -> None:
        self.path = Path(output_dir) / TRAINER_LOG_FILE

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        event = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
        with open_append(self.path) as fh:
            fh.write(json.dumps(event, ensure_ascii=False) + "\n")
        log_line(" ".join(f"{k}={short_value(v)}" for k, v in event.items()))

    def on_train_begin(self, args, state, control, **kwargs):
        """A resumed run logs, evaluates and saves at the intervals of this command, as the README promises
        (transformers keeps the checkpoint's, `logging_steps: 2 (from args) != 10 (from trainer_state.json)`)."""
        before = (state.logging_steps, state.eval_steps, state.save_steps)
        state.compute_steps(args, state.max_steps)
        after = (state.logging_steps, state.eval_steps, state.save_steps)
        if state.global_step and before != after:
            say("[genqa] resumed with this command's intervals: " + ", ".join(
                f"{k}_steps {b} -> {a}" for k, b, a in zip(("logging", "eval", "save"), before, after, strict=True)
                if a != b))


def event_line(state, logs: dict[str, Any]) -> str:
    """One trainer log event as a line of text: `step 10/30  loss 2.345  grad_norm 1.2  learning_rate 0.002`."""
    shown = {k: v for k, v in logs.items() if k != "total_flos" and isinstance(v, (int, float, str))}
    values = "  ".join(f"{k} {short_value(v)}" for k, v in shown.items())
    return f"step {state.global_step}/{state.max_steps}  {values}"


class CleanProgressCallback(ProgressCallback):
    """transformers' progress bar, printing each log event as one line (`event_line`), not a dict of strings."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(event_line(state, logs))


class CleanPrinterCallback(PrinterCallback):
    """transformers' printer (`disable_tqdm`), one line per log event."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(event_line(state, logs), flush=True)


def short_value(value: Any) -> str:
    """A logged value as printed: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class WholeRunTokens(TrainerCallback):
    """TRL counts `num_tokens` from 0 in every process; a resumed run continues the count its checkpoint logged."""

    def __init__(self, trainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        logged = [e["num_tokens"] for e in state.log_history if isinstance(e.get("num_tokens"), int | float)]
        if logged and getattr(self.trainer, "_total_train_tokens", None) == 0:
            self.trainer._total_train_tokens = logged[-1]


def run_mean_loss(log_history: list[dict[str, Any]]) -> float | None:
    """The mean train loss over every logged step of the run, however many processes it took (each logged loss is
    the mean since the previous log, so it is weighted by its steps); Trainer's own `train_loss` covers only the
    steps of the last process."""
    points = sorted((e["step"], float(e["loss"])) for e in log_history
                    if isinstance(e.get("loss"), int | float) and isinstance(e.get("step"), int))
    total, previous = 0.0, 0
    for step, loss in points:
        total += loss * (step - previous)
        previous = step
    return total / previous if previous else None
