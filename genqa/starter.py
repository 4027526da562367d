"""`genqa init`: a starter recipe written from a data file's header, validated before it is written.

    genqa init --task mcq --data my_exam.xlsx [--model Qwen/Qwen2.5-0.5B-Instruct] [--out my_mcq.yaml]

The columns are guessed from the header (printed, each with the recipe key it fills), the option labels from the
answers (`1`-`4` when they are numbers, `A`-`D` otherwise), the instruction is written in the data's language (en,
zh, vi) and names those labels, LoRA is on, and the template is the one that fits the model's family. The recipe is
checked exactly as `genqa train --dry_run` checks it (keys, values, the columns in the data's header) before any file
is written; an existing recipe is never overwritten.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from genqa.errors import GenqaError, report_errors
from genqa.messages import quiet_known_noise

TASKS = ("mcq", "extractive", "abstractive")

#: recipe key -> header names it is guessed from (compared case-, space- and underscore-insensitively)
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "id_column": ("id", "qid", "questionid", "題號", "题号", "編號", "编号", "stt", "mãcâu"),
    "context_column": ("passage", "context", "article", "paragraph", "text", "document", "story", "文章", "段落",
                       "上下文", "短文", "đoạnvăn", "ngữcảnh", "bàiđọc"),
    "question_column": ("question", "query", "prompt", "問題", "问题", "題目", "题目", "câuhỏi"),
    "answer_column": ("answer", "answers", "label", "correct", "correctanswer", "key", "gold", "正確答案", "正确答案",
                      "答案", "đápán"),
    "options_column": ("options", "choices", "choice", "選項", "选项", "lựachọn"),
}
#: a column holding one option: `A`, `option_1`, `選項1`, `choice_b`, ...
OPTION_COLUMN = re.compile(r"^(?:option|opt|choice|選項|选项|lựachọn|phươngán)?[ _-]?([A-Ha-h1-8])$", re.IGNORECASE)

INSTRUCTIONS = {
    "en": "Read the passage and answer the multiple-choice question with the label of the correct option ({labels}) "
          "only.",
    "zh": "请阅读文章，从选项中选出正确答案，只回答正确选项的标签（{labels}）。",
    "vi": "Đọc đoạn văn và trả lời câu hỏi trắc nghiệm, chỉ ghi nhãn của phương án đúng ({labels}).",
}
LABEL_JOINERS = {"en": (", ", " or "), "zh": ("、", "或"), "vi": (", ", " hoặc ")}

#: model name fragment -> template (the first match wins; `tokenizer`: the model's own chat template)
TEMPLATES = (("qwen", "chatml"), ("smollm", "chatml"), ("chatml", "chatml"), ("llama-3", "llama3"),
             ("llama3", "llama3"), ("alpaca-2", "llama2"), ("llama-2", "llama2"), ("tiny:llama", "chatml"),
             ("gemma", "gemma"), ("alpaca", "alpaca"), ("t5", "t5"))
ENCODERS = ("bert", "roberta", "xlm-r", "minilm", "deberta", "electra")

DEFAULT_MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


class StarterError(GenqaError, ValueError):
    """The data's header does not say enough to write a recipe; the message names what to pass."""


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", str(name)).lower()


def guess_columns(columns: list[str], task: str, source: str) -> dict[str, Any]:
    """Recipe column keys guessed from a header; a required column that cannot be found is a `StarterError` naming
    the columns there."""
    by_key = {_key(c): c for c in columns}
    found: dict[str, Any] = {}
    for recipe_key, names in COLUMN_NAMES.items():
        hit = next((by_key[n] for n in map(_key, names) if n in by_key), None)
        if hit is not None:
            found[recipe_key] = hit
    if task == "mcq":
        options = sorted((m.group(1).upper(), c) for c in columns if (m := OPTION_COLUMN.match(_key(c))))
        if len(options) >= 2:
            found["options_columns"] = [c for _, c in options]
            found.pop("options_column", None)
    else:
        found.pop("options_column", None)
    needed = ["question_column", "answer_column"] + (["context_column"] if task != "abstractive" else [])
    if task == "mcq" and not ({"options_columns", "options_column"} & set(found)):
        needed.append("options_columns")
    missing = [k for k in needed if k not in found]
    if missing:
        raise StarterError(f"{source}: could not tell which column is {', '.join(f'`{k}`' for k in missing)} from "
                           f"the header ({', '.join(columns)}). Rename the column, or write the recipe by hand: "
                           "`genqa train --help` lists the column keys.")
    return found


def data_language(rows: list[dict[str, Any]]) -> str:
    """`zh`, `vi` or `en`, from the characters of the first rows."""
    text = " ".join(str(v) for row in rows[:20] for v in row.values())
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "en"
    if sum("\u4e00" <= ch <= "\u9fff" for ch in letters) / len(letters) > 0.2:
        return "zh"
    if sum(ch in "ăâđêôơưĂÂĐÊÔƠƯạảãáàặẳẵắằậẩẫấầẹẻẽéèệểễếềịỉĩíìọỏõóòộổỗốồợởỡớờụủũúùựửữứừỵỷỹýỳ" for ch in letters) > 3:
        return "vi"
    return "en"


def option_labels(rows: list[dict[str, Any]], answer_column: str, count: int) -> list[str]:
    """`1`..`n` when every answer is an option number, `A`.. otherwise (labels, option texts)."""
    answers = [str(r.get(answer_column, "")).strip() for r in rows if str(r.get(answer_column, "")).strip()]
    numeric = bool(answers) and all(a.removesuffix(".0").isdigit() for a in answers)
    return [str(i + 1) for i in range(count)] if numeric else [chr(ord("A") + i) for i in range(count)]


def instruction(language: str, labels: list[str]) -> str:
    """The MCQ instruction in the data's language, naming the labels."""
    sep, last = LABEL_JOINERS[language]
    return INSTRUCTIONS[language].format(labels=sep.join(labels[:-1]) + last + labels[-1])


def template_for(model: str, task: str) -> str | None:
    """The template that fits the model's family (None for an extractive encoder, which needs none)."""
    name = model.lower()
    if task == "extractive" and any(e in name for e in ENCODERS):
        return None
    return next((template for fragment, template in TEMPLATES if fragment in name), "tokenizer")


def recipe_entries(args: argparse.Namespace, columns: dict[str, Any], rows: list[dict[str, Any]]) -> list[tuple]:
    """(key, value, comment) of the starter recipe, in the order it is written (`output_dir`: runs/<recipe name>)."""
    stem = Path(args.out).stem
    entries: list[tuple] = [("task", args.task, ""), ("dataset_path", args.data, "")]
    entries += [(key, value, "guessed from the header") for key, value in columns.items()]
    if args.task == "mcq":
        count = len(columns.get("options_columns", [])) or 4
        labels = option_labels(rows, columns["answer_column"], count)
        language = data_language(rows)
        entries += [("option_labels", labels, "from the answers"),
                    ("instruction", instruction(language, labels), f"in the data's language ({language})")]
    template = template_for(args.model, args.task)
    entries += [("model_name_or_path", args.model, "tiny:llama for an offline pipeline check")]
    if template is None:
        entries.append(("backbone", "extractive", "an encoder with a span head"))
    else:
        entries.append(("template", template, "fits the model family" if template != "tokenizer"
                        else "the model's own chat template"))
    entries += [("use_peft", True, "LoRA: a small adapter trains, the model stays frozen"), ("lora_r", 16, ""),
                ("lora_alpha", 32, ""), ("lora_target_modules", "all-linear", ""), ("learning_rate", 2.0e-4, ""),
                ("num_train_epochs", 3, ""), ("max_length", 1024, ""), ("validation_size", 0.1, "rows held out")]
    if "id_column" in columns:
        entries += [("submission_id_column", columns["id_column"], "the CSV genqa predict writes"),
                    ("submission_answer_column", columns["answer_column"], "")]
    entries.append(("output_dir", f"runs/{stem}", ""))
    return entries


def recipe_text(entries: list[tuple], data: str, out: str) -> str:
    """The recipe as YAML, one key a line with its comment (values written as JSON, which YAML reads as is)."""
    lines = [f"# Starter recipe written by `genqa init` from the header of {data}; check the guesses, then run",
             f"# `genqa train {out} --dry_run` and `genqa preview {out} -n 2`."]
    for key, value, comment in entries:
        line = f"{key}: {json.dumps(value, ensure_ascii=False)}"
        lines.append(f"{line:<40} # {comment}" if comment else line)
    return "\n".join(lines) + "\n"


def check_recipe(text: str, out: Path) -> None:
    """Validate the recipe exactly as `genqa train --dry_run` does, from a temporary file beside `out`."""
    from genqa.recipe import RecipeError, parse_recipe
    from genqa.sft import validate

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=out.parent, encoding="utf-8", delete=False) as fh:
        fh.write(text)
    try:
        qa, sft, model_args, _ = parse_recipe([fh.name, "--use_cpu", "true"])
        problems = validate(qa, sft, model_args, str(out))
    finally:
        Path(fh.name).unlink(missing_ok=True)
    if problems:
        raise RecipeError("the starter recipe does not validate, so it was not written:\n" + "\n".join(problems))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genqa init", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=TASKS, required=True, help="the task the recipe trains")
    p.add_argument("--data", required=True, help="the training data (xlsx, csv, json, jsonl, parquet)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"the base model (default: {DEFAULT_MODEL}; tiny:llama "
                   "for an offline pipeline check)")
    p.add_argument("--out", help="the recipe to write (default: the data file's name as .yaml: my_exam.xlsx -> "
                   "my_exam.yaml)")
    return p


def run(args: argparse.Namespace) -> int:
    from genqa.data.sources import header_columns, read_records

    args.out = args.out or f"{Path(args.data).stem}.yaml"
    from genqa.files import unwritable, write_new

    out = Path(args.out)
    if out.exists():
        raise StarterError(f"{out} already exists; genqa init never overwrites a recipe. Pass another --out.")
    problem = unwritable(out, folder=False)
    if problem:
        raise StarterError(f"--out: {problem}; give the path of a recipe file to write (e.g. my_mcq.yaml).")
    if not out.parent.is_dir():
        raise StarterError(f"--out {out}: the folder {out.parent} does not exist; create it first (mkdir -p "
                           f"{out.parent}) or pass another --out.")
    if not Path(args.data).is_file():
        raise StarterError(f"{args.data}: file not found (working directory: {Path.cwd()}).")
    header = header_columns(args.data) or []
    columns = guess_columns(header, args.task, args.data)
    rows = read_records(args.data)[:50]
    text = recipe_text(recipe_entries(args, columns, rows), args.data, args.out)
    check_recipe(text, out)
    try:
        write_new(out, text)  # exclusive: a file created at `out` meanwhile is never overwritten
    except FileExistsError:
        raise StarterError(f"{out} was created while genqa init ran; it was left as it is. Pass another --out."
                           ) from None
    print(f"[genqa] columns of {args.data}: " + ", ".join(f"{k} = {v}" for k, v in columns.items()))
    print(f"[genqa] wrote {out} (validated). Read it, then:\n  genqa train {out} --dry_run\n"
          f"  genqa preview {out} -n 2\n  genqa train {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `genqa init` / `python -m genqa.starter`."""
    args = build_parser().parse_args(argv)
    quiet_known_noise()
    return report_errors("genqa init", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
