"""What genqa prints: its own summary lines (once per launch: in a multi-process run only rank 0 speaks), the run's
log file, and the known-harmless library messages it silences.

Quiet by default means: genqa's own lines, one progress bar per phase (training, prediction), and every warning a
library emits except the few listed in `HARMLESS` -- each silenced at its source (one logger, or one warning message),
never with a blanket filter. `GENQA_VERBOSE=1` (`genqa --verbose ...`) shows everything, including the data-mapping
progress bars of `datasets`.

`say` also writes each line to the run folder's `genqa.log` once `open_run_log` has named it; lines said before (the
data report is printed before the run folder is prepared) are kept and written first.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings
from pathlib import Path

from genqa.files import open_append

VERBOSE_ENV = "GENQA_VERBOSE"
LOG_FILE = "genqa.log"

#: known-harmless messages: (logger name, or "warning:<category>", message pattern) and why each is harmless
HARMLESS = (
    # TRL / PEFT read the deprecated alias on every model; genqa sets `activation_checkpointing` itself.
    ("warning:FutureWarning", r"`is_gradient_checkpointing` is deprecated"),
    # DeepSpeed says so on every CPU-only import, even when DeepSpeed is not used.
    ("DeepSpeed", r"Setting accelerator to CPU"),
    # bitsandbytes looks for an optional kernel package on CPUs with AVX512-BF16 (shared NOTES: do not install it).
    ("bitsandbytes.backends.cpu.ops", r"Failed to load CPU gemm_4bit_forward from kernels-community"),
)

_pending: list[str] = []
_log_path: Path | None = None


def is_main_process() -> bool:
    """True in single-process runs and on rank 0 of a distributed launch (torchrun / accelerate set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def verbose() -> bool:
    """True when every library message should be shown (`genqa --verbose`, or GENQA_VERBOSE=1)."""
    return os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes")


def say(message: str) -> None:
    """Print a genqa message once per launch (rank 0 only), and keep it for the run's `genqa.log`."""
    if is_main_process():
        print(message, flush=True)
        log_line(message)


def log_line(message: str) -> None:
    """Append a line to the run's `genqa.log` (held back until `open_run_log` names the file)."""
    if not is_main_process():
        return
    if _log_path is None:
        _pending.append(message)
        return
    with open_append(_log_path) as fh:
        fh.write(message.rstrip("\n") + "\n")


_LOGGERS = ("py.warnings", "transformers", "trl", "peft", "accelerate", "datasets")


def begin_run_log() -> None:
    """Forget the log file of an earlier run in this process (a second training, a test session): lines said from
    now on are held for the next `open_run_log`, not appended to the previous run's log."""
    global _log_path
    _log_path = None
    _pending.clear()
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if isinstance(h, logging.FileHandler)
                        and Path(h.baseFilename).name == LOG_FILE]:
            logger.removeHandler(handler)
            handler.close()


def open_run_log(run_dir: str | os.PathLike) -> Path:
    """Start writing genqa's lines (and library warnings) to `RUN/genqa.log`; earlier lines are written first."""
    global _log_path
    path = Path(run_dir).resolve() / LOG_FILE  # absolute: a later change of working directory keeps the log
    if not is_main_process():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    _log_path = path
    held, _pending[:] = list(_pending), []
    for line in held:
        log_line(line)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.FileHandler) and h.baseFilename == handler.baseFilename
                   for h in logger.handlers):
            logger.addHandler(handler)
    logging.captureWarnings(True)
    return path


class _DropMessage(logging.Filter):
    """Drops the records of one logger whose message matches a known-harmless pattern."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.search(str(record.msg))


def quiet_known_noise() -> None:
    """Silence the messages in `HARMLESS` at their source and the data-mapping progress bars, unless verbose.

    Logger filters are attached before the libraries create their loggers (logging returns the same object), so
    messages printed while a library is being imported are caught too.
    """
    if verbose():
        return
    for source, pattern in HARMLESS:
        if source.startswith("warning:"):
            category = {"FutureWarning": FutureWarning, "UserWarning": UserWarning}[source.split(":", 1)[1]]
            warnings.filterwarnings("ignore", message=pattern, category=category)
        else:
            logger = logging.getLogger(source)
            if not any(isinstance(f, _DropMessage) and f.pattern.pattern == pattern for f in logger.filters):
                logger.addFilter(_DropMessage(pattern))
    # genqa prints its own per-split counts; the per-map bars of `datasets` (several per split) add nothing
    if "datasets" in sys.modules:
        from datasets.utils.tqdm import disable_progress_bars

        disable_progress_bars()
    else:  # read when `datasets` is imported: a --help that never imports it stays fast
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
