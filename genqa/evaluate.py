"""Score a predictions file against a dev file and print the metrics as JSON.

    python -m genqa.evaluate --data dev-v2.0.json --predictions preds.json            # SQuAD, version auto-detected
    python -m genqa.evaluate --data dev.csv --predictions preds.csv --task mcq        # MCQ accuracy
    python -m genqa.evaluate --predictions gen.jsonl --task mcq_generation --lang vi  # generated-MCQ layout

Tasks: `squad_v1` / `squad_v2` (official SQuAD scripts), `extractive` (= SQuAD, v2.0 when any question has an
`is_impossible` key, else v1.1), `mcq` (accuracy by id), `mcq_generation` (share of generated texts that follow
the `genqa.data.mcq_format` layout).

Ids are matched as the official SQuAD scripts match them: predictions whose id is not in the dev file are ignored
(a warning gives their count and a few of them; `--strict` refuses them), and a dev question without a prediction
scores 0 (v1.1 and v2.0 alike; the official v2.0 script leaves it out instead, see `genqa.scoring.metrics`).
`--subset predicted` scores exactly the predicted questions (e.g. predictions made with `genqa.generate --limit`)
and says how many of the dev file were left out. Predictions must be strings. Mistakes a user can make (missing
file or column, malformed file, no id in common) end with a message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from genqa.data.mcq_format import DEFAULT_LABELS, PREFIXES
from genqa.errors import DataError, GenqaError, report_errors
from genqa.files import unwritable, write_atomic
from genqa.scoring.metrics import LANGS, mcq_accuracy, mcq_generation_quality, normalize_choice, squad_scores
from genqa.scoring.task_metrics import EVAL_TASKS
from genqa.submission import FINGERPRINT_KEY

TASKS: tuple[str, ...] = tuple(EVAL_TASKS)


class EvaluateError(GenqaError, ValueError):
    """Files that cannot be scored against each other; the message names the file, column or id."""


def _existing(path: str | None, flag: str, hint: str) -> Path:
    if not path:
        raise EvaluateError(f"{flag} is required: {hint}.")
    p = Path(path)
    if not p.is_file():
        raise EvaluateError(f"{flag} file '{path}' not found; pass {hint}.")
    return p


def _read_json(path: Path, flag: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise EvaluateError(f"{flag} file '{path}' is not valid JSON ({err}); pass a JSON file or a CSV with the "
                            "right suffix.") from err
    except UnicodeDecodeError as err:
        raise EvaluateError(f"{flag} file '{path}' is not UTF-8 text ({err}).") from err
    except RecursionError:
        raise EvaluateError(f"{flag} file '{path}' nests JSON values too deeply to read; it is not a predictions or "
                            "dev file.") from None


def _records(path: Path, flag: str) -> list[dict[str, Any]]:
    """Rows of a table / JSON / JSONL file (`genqa.data.sources.read_records`), without the header line of
    genqa.generate's OUT.predictions.jsonl."""
    from genqa.data.sources import read_records  # reading data loads `datasets`: not needed for --help

    try:
        rows = read_records(path)
    except DataError as err:
        raise EvaluateError(f"{flag}: {err}") from err
    return [r for r in rows if FINGERPRINT_KEY not in r]


def _column(rows: list[dict[str, Any]], column: str, path: Path, flag: str, option: str) -> list[Any]:
    """The values of `column`, or a clear error naming the file, the column and the option that picks it."""
    if not rows:
        raise EvaluateError(f"{flag} file '{path}' has no rows.")
    if column not in rows[0]:
        raise EvaluateError(f"column '{column}' not found in {flag} file '{path}' (columns: "
                            f"{', '.join(map(str, rows[0]))}); pick the right one with {option}.")
    return [row.get(column) for row in rows]


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _id_map(ids: list[Any], values: list[Any], path: Path, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for qid, value in zip(ids, values, strict=True):
        key = _cell(qid).strip()
        if key in out:
            raise EvaluateError(f"id '{key}' appears more than once in {flag} file '{path}'; keep one row per id.")
        out[key] = value
    return out


def _prediction(qid: Any, value: Any, path: Path) -> str | None:
    """A prediction value as read: a string, or None (no answer); anything else is refused, naming its id."""
    if value is None or isinstance(value, str):
        return value
    raise EvaluateError(f"--predictions file '{path}': the prediction for id {_cell(qid)!r} is {value!r} (a "
                        f"{type(value).__name__}), not a string; write every answer as a JSON string.")


def _load_answer_map(path: Path, id_column: str, answer_column: str) -> dict[str, str | None]:
    """Predictions `{qid: answer}` from a flat JSON map, or id/answer columns of a table / JSONL file."""
    flag = "--predictions"
    if path.suffix.lower() == ".json":
        data = _read_json(path, flag)
        if isinstance(data, dict):
            if isinstance(data.get("data"), list):
                raise EvaluateError(f"{flag} file '{path}' looks like a SQuAD dataset, not predictions; pass a flat "
                                    "JSON map {qid: answer} or a CSV with id/answer columns.")
            return {str(k): _prediction(k, v, path) for k, v in data.items()}
    rows = _records(path, flag)
    ids = _column(rows, id_column, path, flag, "--id_column")
    answers = _column(rows, answer_column, path, flag, "--answer_column")
    return {k: _prediction(k, v, path) for k, v in _id_map(ids, answers, path, flag).items()}


def _ids_to_score(known: list[str], preds: dict[str, Any], args: argparse.Namespace, pred_path: Path,
                  data_path: Path) -> list[str]:
    """The dev ids to score: all of them (a missing prediction scores 0), or with `--subset predicted` those with a
    prediction. Prediction ids not in the dev file are ignored with a warning (refused under `--strict`)."""
    known_set = set(known)
    extra = [k for k in preds if k not in known_set]
    matched = len(preds) - len(extra)
    if not preds:
        raise EvaluateError(f"--predictions file '{pred_path}' holds no predictions.")
    if extra and (args.strict or not matched):
        shown = ", ".join(repr(k) for k in extra[:3])
        why = "(--strict)" if matched else "so there is nothing to score"
        raise EvaluateError(f"{len(extra)} of {len(preds)} ids in --predictions file '{pred_path}' are not in "
                            f"--data file '{data_path}' (e.g. {shown}) {why}; check that both files come from the "
                            "same split and that --id_column names the id column.")
    if extra:
        _warn(f"{len(extra)} of {len(preds)} ids in --predictions file '{pred_path}' are not in --data file "
              f"'{data_path}' (e.g. {', '.join(repr(k) for k in extra[:3])}); they are ignored, as the official "
              "SQuAD scripts do (--strict refuses them).")
    missing = [k for k in known if k not in preds]
    if missing and args.subset == "predicted":
        _warn(f"--subset predicted: scoring the {len(known) - len(missing)} questions with a prediction; "
              f"{len(missing)} of the {len(known)} questions of --data file '{data_path}' are left out.")
        return [k for k in known if k in preds]
    if missing and args.strict:
        raise EvaluateError(f"{len(missing)} of the {len(known)} questions of --data file '{data_path}' have no "
                            f"prediction in '{pred_path}' (e.g. {', '.join(repr(k) for k in missing[:3])}) "
                            "(--strict); predict them all, or pass --subset predicted to score only those predicted.")
    return known


def _warn(message: str) -> None:
    print(f"genqa.evaluate: warning: {message}", file=sys.stderr)


def _table_hint(args: argparse.Namespace, data_path: Path) -> str:
    """What to do with a table passed as `--data` for a SQuAD-scored task: an explicit `--task extractive` /
    `abstractive` is told the gold layout it needs; without `--task`, multiple-choice golds are the likely case."""
    squad = ("SQuAD EM/F1 are scored against golds in the official SQuAD JSON layout (`{\"data\": [{\"paragraphs\": "
             "[{\"context\": ..., \"qas\": [{\"id\": ..., \"answers\": [{\"text\": ...}]}]}]}]}`)")
    where = f"--data file '{data_path}' is a table ({data_path.suffix}), not SQuAD JSON"
    if getattr(args, "task_passed", True):
        return (f"{where}, and --task {args.task}: {squad}. Write the gold answers of your test rows in that "
                "layout (ids as in --predictions), or, if the answers are option labels, pass --task mcq.")
    return (f"{where}, and --task is {args.task} (the default). For multiple-choice answers (e.g. a submission CSV) "
            "pass `--task mcq --recipe RECIPE.yaml` (the recipe you trained with: its columns and option labels), or "
            f"`--task mcq --gold_column COLUMN --labels A,B,C,D`. For extractive answers, {squad}.")


def _evaluate_squad(args: argparse.Namespace) -> dict[str, Any]:
    from genqa.data.rows import unique_ids
    from genqa.data.sources import is_squad_json, squad_examples, squad_version

    data_path = _existing(args.data, "--data", "an official-layout SQuAD JSON file (e.g. dev-v2.0.json)")
    pred_path = _existing(args.predictions, "--predictions", "a JSON map {qid: answer} or a CSV with id/answer")
    if data_path.suffix.lower() in (".xlsx", ".xls", ".csv", ".tsv", ".parquet", ".jsonl"):
        raise EvaluateError(_table_hint(args, data_path))
    data = _read_json(data_path, "--data")
    if not is_squad_json(data):
        raise EvaluateError(f"--data file '{data_path}' is not official SQuAD JSON "
                            "({\"data\": [{\"paragraphs\": [...]}]}); for MCQ files use --task mcq.")
    examples = squad_examples(data, f"--data file '{data_path}'")
    layout_version = squad_version(data)
    version = EVAL_TASKS[args.task][1] or layout_version
    if examples and layout_version == 1 and not any(golds for _, golds in examples):
        raise EvaluateError(f"--data file '{data_path}' has no gold answers (an unlabelled test split?); evaluate "
                            "against a labelled dev file.")
    ids = [qid for qid, _ in examples]
    preds = _load_answer_map(pred_path, args.id_column, args.answer_column)
    if len(set(ids)) != len(ids):
        renamed, n = unique_ids(ids)
        if any(r in preds for r in renamed if r not in set(ids)):  # predictions keyed like genqa.generate's id#2
            examples = [(r, golds) for r, (_, golds) in zip(renamed, examples, strict=True)]
            ids = renamed
            note = "matched to predictions keyed id#2, id#3, ... as genqa.generate writes them"
        else:
            note = "as in the official script, only the last occurrence of each id is scored"
        _warn(f"--data file '{data_path}' repeats {n} question ids; {note}.")
    keep = set(_ids_to_score(list(dict.fromkeys(ids)), preds, args, pred_path, data_path))
    return squad_scores([ex for ex in examples if ex[0] in keep], preds, lang=args.lang, version=version)


def _recipe_golds(recipe: str, data_path: Path) -> dict[str, str]:
    """{id: gold label} of an MCQ file read through a recipe's data source, columns and task (as in training)."""
    from genqa.data.rows import load_rows
    from genqa.data.tasks import get_task
    from genqa.recipe import parse_recipe

    qa = parse_recipe([recipe, "--use_cpu", "true"])[0]
    task = get_task(qa)
    if not task.scores_labels:
        raise EvaluateError(f"--recipe {recipe} is a {qa.task} recipe; --task mcq needs an mcq recipe.")
    rows, _ = load_rows(task, str(data_path), require_answer=True)
    return {r["id"]: qa.option_labels[r["label"]] for r in rows if r["label"] >= 0}


def _option_labels(args: argparse.Namespace) -> list[str] | None:
    """The MCQ option labels: `--labels`, else the recipe's `option_labels` (None when neither is given)."""
    if args.labels:
        return [x.strip() for x in args.labels.split(",") if x.strip()]
    if args.recipe:
        from genqa.recipe import parse_recipe

        return list(parse_recipe([args.recipe, "--use_cpu", "true"])[0].option_labels)
    return None


def _evaluate_mcq(args: argparse.Namespace) -> dict[str, Any]:
    data_path = _existing(args.data, "--data", "a CSV/JSON/JSONL/XLSX file with id and gold answer columns")
    pred_path = _existing(args.predictions, "--predictions", "a CSV with id and answer columns")
    if args.recipe:
        golds = _recipe_golds(args.recipe, data_path)
    else:
        rows = _records(data_path, "--data")
        ids = _column(rows, args.id_column, data_path, "--data", "--id_column")
        golds = _id_map(ids, _column(rows, args.gold_column, data_path, "--data", "--gold_column"), data_path,
                        "--data")
    preds = _load_answer_map(pred_path, args.id_column, args.answer_column)
    scored = _ids_to_score(list(golds), preds, args, pred_path, data_path)
    labels = _option_labels(args)
    metrics = mcq_accuracy([_cell(golds[k]) for k in scored], [preds.get(k) for k in scored], labels=labels)
    metrics["missing"] = sum(1 for k in scored if k not in preds)
    if metrics["missing"]:
        _warn(f"{metrics['missing']} of {len(scored)} questions have no prediction; each is scored wrong.")
    valid = {normalize_choice(lab) for lab in labels or []}
    odd = [golds[k] for k in scored if normalize_choice(_cell(golds[k])) not in valid | {None}]
    if labels and odd:
        _warn(f"{len(odd)} gold answers are not option labels ({', '.join(labels)}) (e.g. {_cell(odd[0])!r}); they "
              "are compared as text. If the gold column holds option texts or numbers, pass --recipe RECIPE: it "
              "maps them to labels exactly as training does.")
    return metrics


def _evaluate_mcq_generation(args: argparse.Namespace) -> dict[str, Any]:
    pred_path = _existing(args.predictions, "--predictions", "a CSV/JSONL file whose answer column holds generated "
                          "MCQ text")
    rows = _records(pred_path, "--predictions")
    outputs = _column(rows, args.answer_column, pred_path, "--predictions", "--answer_column")
    question_prefix, answer_prefix = PREFIXES.get(args.lang, PREFIXES["en"])
    labels = _option_labels(args) or list(DEFAULT_LABELS)
    return mcq_generation_quality(
        [_cell(o) for o in outputs],
        labels=labels,
        question_prefix=args.question_prefix or question_prefix,
        answer_prefix=args.answer_prefix or answer_prefix,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser of `python -m genqa.evaluate`."""
    ap = argparse.ArgumentParser(prog="genqa eval", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", help="dev file: SQuAD JSON (extractive tasks) or a table with id/gold columns (mcq)")
    ap.add_argument("--predictions", required=True, help="predictions: JSON map {qid: answer}, CSV, JSONL, ...")
    ap.add_argument("--task", choices=TASKS, default=None,
                    help="extractive = SQuAD with v1.1/v2.0 auto-detected from `is_impossible` (default)")
    ap.add_argument("--lang", choices=LANGS, default="en",
                    help="answer normalisation: en = official SQuAD, vi = + Unicode NFC, zh = character F1")
    ap.add_argument("--id_column", default="id", help="id column of table files (default: id)")
    ap.add_argument("--answer_column", default="answer", help="answer / generated-text column of predictions")
    ap.add_argument("--gold_column", default="answer", help="gold answer column of the --data table (mcq)")
    ap.add_argument("--recipe", help="mcq: read --data through this recipe's columns and option labels, so golds "
                    "written as option texts, numbers or column names are mapped to labels exactly as in training")
    ap.add_argument("--question_prefix", help="mcq_generation: question prefix (default by --lang: Question: / "
                    "Câu hỏi:)")
    ap.add_argument("--answer_prefix", help="mcq_generation: answer-key prefix (default by --lang: Answer: / Đáp án:)")
    ap.add_argument("--labels", help="mcq / mcq_generation: comma-separated option labels (default: the --recipe's "
                    "option_labels; mcq_generation: A,B,C,D). mcq: predictions that are not a label count as invalid")
    ap.add_argument("--subset", choices=("all", "predicted"), default="all",
                    help="all: every question of --data (a missing prediction scores 0); predicted: only the "
                    "questions with a prediction (e.g. from generate --limit N)")
    ap.add_argument("--strict", action="store_true",
                    help="refuse prediction ids not in --data and (with --subset all) questions without a prediction")
    ap.add_argument("--out", help="also write the metrics JSON to this file")
    return ap


#: by metric (`EVAL_TASKS`); SQuAD EM/F1 otherwise
EVALUATORS = {"accuracy": _evaluate_mcq, "mcq_layout": _evaluate_mcq_generation}


def run(args: argparse.Namespace) -> int:
    """Score, print the metrics as JSON (and write them to --out)."""
    problem = unwritable(args.out, folder=False) if args.out else None
    if problem:  # checked before scoring, not after
        raise EvaluateError(f"--out: {problem}; give the path of a metrics JSON file to write (e.g. metrics.json).")
    metrics = EVALUATORS.get(EVAL_TASKS[args.task][0], _evaluate_squad)(args)
    text = json.dumps(metrics, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(out, text + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the evaluation CLI; prints the metrics as JSON and returns 0 (user errors exit with code 2)."""
    args = build_parser().parse_args(argv)
    args.task_passed, args.task = args.task is not None, args.task or TASKS[0]
    return report_errors("genqa.evaluate", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
