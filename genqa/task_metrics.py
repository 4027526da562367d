"""The metric of each task, computed from canonical gold rows and predicted answers (used by generate and training)."""

from __future__ import annotations

from typing import Any

from genqa.metrics import mcq_accuracy, mcq_generation_quality, squad_scores
from genqa.tasks import Task


def has_gold(task: Task, rows: list[dict[str, Any]]) -> bool:
    """True when the task's metric can be computed: the rows carry gold answers (unlabelled test sets do not), or the
    task is MCQ generation, whose metric checks the generated questions' structure and needs no gold."""
    if task.name == "mcq_generation":
        return True
    if task.name == "mcq":
        return any(r["label"] >= 0 for r in rows)
    return any(r["answers"] for r in rows)


def task_metrics(task: Task, rows: list[dict[str, Any]], answers: dict[str, str | None],
                 lang: str = "en") -> dict[str, Any]:
    """SQuAD EM/F1 (v1.1 keys, or v2.0 keys when some questions are unanswerable), MCQ accuracy, or MCQ-generation
    structural quality."""
    if task.name == "mcq":
        labelled = [r for r in rows if r["label"] >= 0]
        out = mcq_accuracy([task.args.option_labels[r["label"]] for r in labelled],
                           [answers.get(r["id"]) for r in labelled])
        if len(labelled) < len(rows):
            out["unlabelled_rows_skipped"] = len(rows) - len(labelled)
        return out
    if task.name == "mcq_generation":
        return mcq_generation_quality([answers.get(r["id"]) or "" for r in rows], labels=task.args.option_labels,
                                      question_prefix=task.args.mcq_question_prefix,
                                      answer_prefix=task.args.mcq_answer_prefix)
    version = 2 if any(not r["answers"] for r in rows) else 1
    examples = [(r["id"], list(r["answers"])) for r in rows]
    return squad_scores(examples, {k: v or "" for k, v in answers.items()}, lang=lang, version=version)
