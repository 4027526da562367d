"""Messages printed once per launch: in a multi-process run only rank 0 speaks."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """True in single-process runs and on rank 0 of a distributed launch (torchrun / accelerate set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def say(message: str) -> None:
    """Print a genqa message once per launch (rank 0 only)."""
    if is_main_process():
        print(message, flush=True)
