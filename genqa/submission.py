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

from genqa.errors import GenqaError
from genqa.files import write_atomic


class SubmissionError(GenqaError, ValueError):
    """Predictions that cannot make a valid submission; the message says how many and what to do."""


FINGERPRINT_KEY = "genqa_fingerprint"


class PredictionStore:
    """Append-only JSONL of predictions keyed by id; reopening it resumes.

    The first line records what made the predictions (model, data, decoding settings); reopening the store with a
    different fingerprint is refused, so a resumed run never mixes answers of two models or two settings.
    """

    def __init__(self, path: str | os.PathLike, fingerprint: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.records: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        saved = None
        for n, line in enumerate(lines):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines) - 1:  # a line cut short by a kill: predict that example again
                    continue
                raise SubmissionError(f"{self.path}: line {n + 1} is not JSON; remove it or the file.") from None
            if FINGERPRINT_KEY in rec:
                saved = rec[FINGERPRINT_KEY]
            else:
                self.records[str(rec["id"])] = rec
        if fingerprint is not None and saved is not None and saved != fingerprint:
            changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
            raise SubmissionError(f"{self.path} holds predictions made with other settings (changed: "
                                  f"{', '.join(changed)}); resuming would mix them. Delete it or choose another --out.")
        self.fingerprint = saved if fingerprint is None else fingerprint
        self._rewrite()  # drop a torn last line so appends stay valid JSONL

    def _rewrite(self) -> None:
        header = [{FINGERPRINT_KEY: self.fingerprint}] if self.fingerprint is not None else []
        write_atomic(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n"
                                        for r in [*header, *self.records.values()]))

    def __contains__(self, example_id: str) -> bool:
        return example_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def add(self, records: list[dict[str, Any]]) -> None:
        """Append records (each with an `id`) and make them durable."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            self._rewrite()
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
        missing = [i for i in bad if i not in answers]
        invalid = [i for i in bad if i in answers]
        parts = []
        if missing:
            parts.append(f"{len(missing)} have no prediction yet (e.g. id {missing[0]!r}: rerun to continue)")
        if invalid:
            parts.append(f"{len(invalid)} have an invalid or unparseable answer (e.g. id {invalid[0]!r}: pass "
                         "--fill_missing VALUE, or for MCQ use --mcq_mode score, which always gives a valid label)")
        raise SubmissionError(f"{path}: {len(bad)} of {len(ids)} ids are not answered: {'; '.join(parts)}. "
                              "Not writing the submission.")
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
