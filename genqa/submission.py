"""Predictions on disk: a resumable per-example store, and the Kaggle CSV / SQuAD JSON written from it.

`PredictionStore` appends one JSON line per example as soon as it is predicted (flushed and fsynced), keyed by id,
so a killed run continues where it stopped with no duplicates and nothing lost. `write_submission` writes the final
CSV atomically: every test id exactly once, in input order, with the id/answer columns the recipe names; it refuses
missing or invalid answers unless told how to fill them.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genqa.run_dir import write_atomic


class SubmissionError(ValueError):
    """Predictions that cannot make a valid submission; the message says how many and what to do."""


class PredictionStore:
    """Append-only JSONL of predictions keyed by id; reopening it resumes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for n, line in enumerate(lines):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    if n == len(lines) - 1:  # a line cut short by a kill: predict that example again
                        continue
                    raise SubmissionError(f"{self.path}: line {n + 1} is not JSON; remove it or the file.") from None
                self.records[str(rec["id"])] = rec
            # rewrite without a torn last line so appends stay valid JSONL
            write_atomic(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values()))

    def __contains__(self, example_id: str) -> bool:
        return example_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Append records (each with an `id`) and make them durable."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
                self.records[str(rec["id"])] = rec
            fh.flush()
            os.fsync(fh.fileno())


def write_submission(path: str | os.PathLike, ids: list[str], answers: dict[str, str | None],
                     id_column: str = "id", answer_column: str = "answer",
                     is_valid: Callable[[str | None], bool] = lambda a: a is not None,
                     fill: str | None = None) -> dict[str, int]:
    """Write the CSV atomically: one row per id in `ids` order; invalid answers refused unless `fill` is given."""
    if len(set(ids)) != len(ids):
        raise SubmissionError(f"{path}: the test ids are not unique; a submission needs one row per id.")
    bad = [i for i in ids if not is_valid(answers.get(i))]
    if bad and fill is None:
        raise SubmissionError(f"{path}: {len(bad)} of {len(ids)} ids have a missing or invalid answer (e.g. id "
                              f"{bad[0]!r}); not writing the submission. Rerun to complete the predictions, or pass "
                              "--fill_missing VALUE to fill them.")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([id_column, answer_column])
    for i in ids:
        a = answers.get(i)
        writer.writerow([i, fill if not is_valid(a) else a])
    write_atomic(path, buf.getvalue())
    return {"rows": len(ids), "filled": len(bad)}


def write_json_predictions(path: str | os.PathLike, ids: list[str], answers: dict[str, str | None]) -> None:
    """SQuAD-style `{id: answer}` map (empty string = no answer), written atomically."""
    write_atomic(path, json.dumps({i: answers.get(i) or "" for i in ids}, ensure_ascii=False, indent=1))
