"""Predictions on disk: a resumable per-example store, and the Kaggle CSV / SQuAD JSON written from it.

`PredictionStore` appends one JSON line per example, a batch of lines at a time as soon as the batch is predicted
(flushed and fsynced), keyed by id, so a killed run loses at most the batch in progress and continues where it
stopped with no duplicates. `write_submission` writes the final
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
from genqa.files import open_append, write_atomic


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
        # compared with the saved one as JSON reads it back (tuples become lists)
        self.fingerprint = None if fingerprint is None else json.loads(json.dumps(fingerprint, default=str))
        self.records: dict[str, dict[str, Any]] = {}
        if not self.path.exists():
            return
        saved = self._read()
        wanted = self.fingerprint
        if wanted is not None and saved is None and self.records:
            raise SubmissionError(f"{self.path} holds predictions with no record of what made them; resuming could "
                                  "mix them with this run's. Pass --overwrite to predict again from scratch, or "
                                  "choose another --out.")
        if wanted is not None and saved is not None and saved != wanted:
            changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            raise SubmissionError(f"{self.path} holds predictions made with other settings (changed: "
                                  f"{', '.join(changed)}); resuming would mix them. Pass --overwrite to predict "
                                  "again from scratch, or choose another --out.")
        self.fingerprint = saved if wanted is None else wanted
        self._rewrite()  # drop a torn last line so appends stay valid JSONL

    def _read(self) -> dict[str, Any] | None:
        """Load the records; return the saved fingerprint. A torn last line (a kill mid-write) is dropped; any other
        line that is not a JSON object with an `id` is refused, naming the line."""
        lines = self.path.read_text(encoding="utf-8").splitlines()
        saved = None
        for n, line in enumerate(lines, start=1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                if n == len(lines):  # a line cut short by a kill: predict that example again
                    continue
                raise SubmissionError(f"{self.path}: line {n} is not JSON; remove it or the file.") from None
            except RecursionError:
                raise SubmissionError(f"{self.path}: line {n} nests JSON too deeply; remove it or the file.") from None
            if not isinstance(rec, dict):
                raise SubmissionError(f"{self.path}: line {n} is not a JSON object (a prediction record is "
                                      '{"id": ..., "answer": ...}); remove it or the file.')
            if FINGERPRINT_KEY in rec:
                saved = rec[FINGERPRINT_KEY]
                if not isinstance(saved, dict):
                    raise SubmissionError(f"{self.path}: line {n}: {FINGERPRINT_KEY} is not a JSON object; remove "
                                          "the file.")
            elif "id" not in rec:
                raise SubmissionError(f"{self.path}: line {n} has no \"id\"; every prediction record needs one. "
                                      "Remove that line or the file.")
            else:
                self.records[str(rec["id"])] = rec
        return saved

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
        with open_append(self.path) as fh:
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


def writes_json(path: str | os.PathLike) -> bool:
    """Whether `--out` asks for the SQuAD `{id: answer}` JSON map (`.json`, any case) rather than the CSV."""
    return Path(path).suffix.lower() == ".json"


def write_json_predictions(path: str | os.PathLike, ids: list[str], answers: dict[str, str | None]) -> None:
    """SQuAD-style `{id: answer}` map (empty string = no answer), written atomically."""
    write_atomic(path, json.dumps({i: answers.get(i) or "" for i in ids}, ensure_ascii=False, indent=1))
