"""The metric of each task, computed from canonical gold rows and predicted answers (used by generate and training).

A task names its metric (`Task.metric`); `METRICS` maps that name to the function here. Nothing in this module
loads data: rows and answers come in, a dict of figures goes out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from genqa.scoring.metrics import mcq_accuracy, mcq_generation_quality, squad_scores


def squad_metric(task, rows: list[dict[str, Any]], answers: dict[str, str | None], lang: str) -> dict[str, Any]:
    """SQuAD EM/F1: v1.1 keys, or v2.0 keys when some questions are unanswerable."""
    version = 2 if any(not r["answers"] for r in rows) else 1
    examples = [(r["id"], list(r["answers"])) for r in rows]
    return squad_scores(examples, {k: v or "" for k, v in answers.items()}, lang=lang, version=version)


def accuracy_metric(task, rows: list[dict[str, Any]], answers: dict[str, str | None], lang: str) -> dict[str, Any]:
    """MCQ accuracy over the labelled rows (unlabelled ones are counted, not scored)."""
    labelled = [r for r in rows if r["label"] >= 0]
    out = mcq_accuracy([task.args.option_labels[r["label"]] for r in labelled],
                       [answers.get(r["id"]) for r in labelled])
    if len(labelled) < len(rows):
        out["unlabelled_rows_skipped"] = len(rows) - len(labelled)
    return out


def mcq_layout_metric(task, rows: list[dict[str, Any]], answers: dict[str, str | None], lang: str) -> dict[str, Any]:
    """Structural quality of generated MCQs (question, distinct options, a key), with nested options and keys
    grounded in the row's context."""
    contexts = [r.get("context") or "" for r in rows]
    return mcq_generation_quality([answers.get(r["id"]) or "" for r in rows], contexts, lang,
                                  labels=task.args.option_labels, question_prefix=task.args.mcq_question_prefix,
                                  answer_prefix=task.args.mcq_answer_prefix)


METRICS: dict[str, Callable[..., dict[str, Any]]] = {
    "squad": squad_metric, "accuracy": accuracy_metric, "mcq_layout": mcq_layout_metric,
}
#: the `genqa eval --task` values (the first is the default): the metric each scores with, and the SQuAD version it
#: forces (None: read from the dev file)
EVAL_TASKS: dict[str, tuple[str, int | None]] = {
    "extractive": ("squad", None), "squad_v1": ("squad", 1), "squad_v2": ("squad", 2), "mcq": ("accuracy", None),
    "mcq_generation": ("mcq_layout", None),
}


def task_metrics(task, rows: list[dict[str, Any]], answers: dict[str, str | None], lang: str = "en"
                 ) -> dict[str, Any]:
    """The task's own metric (`task.metric`) of `answers` against the canonical `rows`."""
    return METRICS[task.metric](task, rows, answers, lang)
