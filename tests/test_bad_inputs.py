"""The `tests/bad_inputs/` corpus through every command: each case exits with code 2 and one `genqa.<cmd>: error:`
message naming the file and the row or key; no traceback, no signal, no silent acceptance.

Commands run in-process through their `main()` (fast); only the file that used to kill the process with SIGSEGV
(datasets' JSON reader on `null`) runs in a subprocess, to see the exit code a user sees.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
B = "tests/bad_inputs"


def _sft_dry(recipe: str, tmp: Path) -> list[str]:
    return [f"{B}/{recipe}", "--dry_run"]


def _sft(recipe: str, tmp: Path) -> list[str]:
    return [f"{B}/{recipe}", "--output_dir", str(tmp / "run")]


def _generate(recipe: str, tmp: Path) -> list[str]:
    return ["--base", "tiny:llama", "--recipe", f"{B}/{recipe}", "--data", _data_of(recipe), "--out",
            str(tmp / "out.csv")]


def _data_of(recipe: str) -> str:
    text = (ROOT / B / recipe).read_text(encoding="utf-8")
    return next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("dataset_path:"))


# (command, argv builder or fixed argv, recipe / None, substrings the one error message must hold)
CASES = {
    # item 8: wrong-typed or out-of-range recipe values, caught by --dry_run
    "max_steps_list": ("sft", _sft_dry, "recipe_max_steps_list.yaml", ["recipe_max_steps_list.yaml", "max_steps",
                                                                       "whole number"]),
    "lora_r_float": ("sft", _sft_dry, "recipe_lora_r_float.yaml", ["recipe_lora_r_float.yaml", "lora_r: 8.5"]),
    "negative_batch": ("sft", _sft_dry, "recipe_negative_batch.yaml", ["per_device_train_batch_size", ">= 1"]),
    "dtype_float33": ("sft", _sft_dry, "recipe_dtype_float33.yaml", ["recipe_dtype_float33.yaml", "dtype",
                                                                     "float33", "bfloat16"]),
    # item 8, only visible once the model is loaded (before any training step)
    "lora_target": ("sft", _sft, "recipe_lora_target.yaml", ["lora_target_modules", "qkv_proj", "q_proj, up_proj"]),
    # item 9
    "tiny_gpt9": ("sft", _sft_dry, "recipe_tiny_gpt9.yaml", ["recipe_tiny_gpt9.yaml", "model_name_or_path",
                                                             "tiny:gpt9", "tiny:llama"]),
    "pkg_missing": ("sft", _sft_dry, "recipe_pkg_missing.yaml", ["model_name_or_path", "no_such_pkg"]),
    "prompt_positional": ("sft", _sft_dry, "recipe_prompt_positional.yaml", ["recipe_prompt_positional.yaml",
                                                                             "prompt_format", "{0}"]),
    "prompt_unclosed": ("sft", _sft_dry, "recipe_prompt_unclosed.yaml", ["prompt_format", "expected '}'"]),
    "template_syntax": ("sft", _sft_dry, "recipe_template_syntax.yaml", ["template_syntax.jinja", "line 1"]),
    "template_sandbox": ("sft", _sft_dry, "recipe_template_sandbox.yaml", ["template_sandbox.jinja",
                                                                           "SecurityError"]),
    "bad_utf8_jsonl": ("generate", _generate, "recipe_bad_utf8.yaml", ["bad_utf8.jsonl", "line 2", "UTF-8"]),
    # item 12: attribute access in prompt_format
    "prompt_attribute": ("sft", _sft_dry, "recipe_prompt_attribute.yaml", ["prompt_format",
                                                                           "{context.__class__}"]),
    # items 6 and 7: malformed data files, read by a real training run (they fail before the model loads)
    "null_list": ("sft", _sft, "recipe_null_list.yaml", ["null_list.json", "element 0", "null"]),
    "squad_no_question": ("sft", _sft, "recipe_squad_no_question.yaml", [
        "squad_no_question.json", "data[0].paragraphs[1].qas[0]", "'q7'", "`question`"]),
    "squad_qas_string": ("generate", _generate, "recipe_squad_qas_string.yaml", [
        "squad_qas_string.json", "data[0].paragraphs[1]", "`qas` is a str"]),
    "squad_answer_empty": ("generate", _generate, "recipe_squad_answer_empty.yaml", [
        "squad_answer_empty.json", "qas[0] (id 'q7')", "answers[0]", "`text`"]),
    "squad_start_abc": ("generate", _generate, "recipe_squad_start_abc.yaml", [
        "squad_start_abc.json", "(id 'q7')", "answer_start", "'abc'"]),
    "squad_context_number": ("generate", _generate, "recipe_squad_context_number.yaml", [
        "squad_context_number.json", "data[0].paragraphs[1]", "`context` is a int"]),
    "c3_bad_document": ("generate", _generate, "recipe_c3_bad_document.yaml", [
        "c3_bad_document.json", "document 1"]),
    # item 13: MCQ rows
    "mcq_empty_option": ("sft", _sft, "recipe_mcq_empty_option.yaml", ["mcq_empty_option.csv", "row 1", "(id 2)",
                                                                       "option B is empty", "on_bad_row"]),
    "mcqgen_case_duplicates": ("sft", _sft, "recipe_mcqgen_case_duplicates.yaml", [
        "mcqgen_case_duplicates.jsonl", "(id g1)", "same up to case"]),
    "mcqgen_empty_question": ("sft", _sft, "recipe_mcqgen_empty_question.yaml", [
        "mcqgen_empty_question.jsonl", "(id g2)", "question is empty"]),
    # items 5, 7, 15: evaluate
    "eval_true_prediction": ("evaluate", ["--data", f"{B}/squad_dev.json", "--predictions",
                                          f"{B}/predictions_true.json"], None,
                             ["predictions_true.json", "'q7'", "not a string"]),
    "eval_extra_id_strict": ("evaluate", ["--data", f"{B}/squad_dev.json", "--predictions",
                                          f"{B}/predictions_extra_id.json", "--strict"], None,
                             ["predictions_extra_id.json", "'zz9'", "--strict"]),
    "eval_malformed_dev": ("evaluate", ["--data", f"{B}/squad_no_question.json", "--predictions",
                                        f"{B}/predictions_extra_id.json"], None,
                           ["squad_no_question.json", "data[0].paragraphs[1].qas[0]", "'q7'"]),
    # merge: a run folder whose saved recipe holds a wrong-typed value
    "merge_bad_recipe": ("merge", ["--adapter", f"{B}/run_bad_recipe", "--out", "{tmp}/merged"], None,
                         ["run_bad_recipe/genqa_recipe.yaml", "lora_r: 8.5"]),
}


def _main(command: str):
    import importlib

    return importlib.import_module(f"genqa.{command}").main


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_error_and_exit_2(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    command, argv, recipe, expected = CASES[case]
    args = argv(recipe, tmp_path) if callable(argv) else [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = _main(command)(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith(f"genqa.{command}: error:")]
    assert len(errors) == 1, err
    message = err[err.index(f"genqa.{command}: error:"):]
    for text in expected:
        assert text in message, f"{text!r} not in {message!r}"


def test_every_corpus_file_is_used():
    used = " ".join(" ".join(map(str, [c[1] if not callable(c[1]) else "", c[2] or "", *c[3]])) for c in
                    CASES.values())
    used += " ".join((ROOT / B / c[2]).read_text(encoding="utf-8") for c in CASES.values() if c[2])
    used += " recipe_null.yaml null.json"  # the subprocess case below
    unused = [p.name for p in (ROOT / B).iterdir() if p.name not in used]
    assert not unused, f"corpus files no case reads: {unused}"


@pytest.mark.parametrize("recipe", ["recipe_null.yaml"])
def test_null_json_file_is_refused_not_a_segfault(recipe, tmp_path):
    """datasets' JSON reader dies with SIGSEGV (rc 139, no message) on a file holding `null`; genqa refuses it."""
    proc = subprocess.run([sys.executable, "-m", "genqa.generate", "--base", "tiny:llama", "--recipe",
                           f"{B}/{recipe}", "--data", f"{B}/null.json", "--out", str(tmp_path / "o.csv")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "genqa.generate: error: " in proc.stderr and "null.json" in proc.stderr and "null" in proc.stderr


# ---- the same promise through the real `genqa` command, in one subprocess -------------------------------------------
# Each row: (case, files written under {tmp} first, the `genqa` command line, expected exit code, phrases of the
# message). Every command runs through `genqa.cli.main` in one child process (imports paid once); an exception that
# escapes it is printed as a traceback and fails its row.

BASE = """model_name_or_path: tiny:llama
dtype: float32
use_peft: true
lora_target_modules: all-linear
max_length: 256
per_device_train_batch_size: 2
max_steps: 1
save_strategy: "no"
report_to: none
validation_size: 0
template: alpaca
task: extractive
dataset_path: data/tiny/squad_tiny.json
"""
LAUGHS = "model_init_kwargs:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"  a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
LOOP = "{% for m in messages %}{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}"
FAKE_RUN = {"runs/r/adapter_config.json": '{"base_model_name_or_path": "tiny:llama"}',
            "runs/r/checkpoint-2/trainer_state.json": "{}", "runs/r/genqa_recipe.yaml": BASE}
PREDICT = "predict --base tiny:llama --recipe {tmp}/base.yaml --data data/tiny/squad_tiny.json --out {tmp}/o.csv"


def _with(line: str) -> str:
    """BASE with `line` in place of the keys it sets."""
    keys = {x.split(":")[0] for x in line.splitlines() if ":" in x and not x.startswith(" ")}
    return "".join(x for x in BASE.splitlines(True) if x.split(":")[0] not in keys) + line


def _two_sheets(path: Path) -> None:
    """A workbook whose first sheet is empty and whose rows sit on its second sheet."""
    import pandas as pd

    with pd.ExcelWriter(path) as book:
        pd.DataFrame().to_excel(book, sheet_name="notes", index=False)
        pd.DataFrame({"id": ["1"], "question": ["Q?"], "answers": ["A"], "context": ["A b"]}).to_excel(
            book, sheet_name="data", index=False)


ROWS = [
    # issue 21 item 1: merge --overwrite never deletes a run, its parent or a folder genqa did not write
    ("merge_out_is_the_run", FAKE_RUN, "merge --adapter {tmp}/runs/r --out {tmp}/runs/r --overwrite", 2,
     ["is the adapter's run folder", "would delete the run"]),
    ("merge_out_holds_the_run", FAKE_RUN, "merge --adapter {tmp}/runs/r --out {tmp}/runs --overwrite", 2,
     ["or a folder holding it"]),
    ("merge_out_user_folder", {**FAKE_RUN, "mine/model.safetensors": "x"},
     "merge --adapter {tmp}/runs/r --out {tmp}/mine --overwrite", 2, ["only replaces a folder genqa merge wrote"]),
    # item 3: env: may not move caches or go online
    ("env_online_and_cache", {"r.yaml": _with("env: {HF_HUB_OFFLINE: '0', GENQA_CACHE: /tmp/elsewhere}\n")},
     "train {tmp}/r.yaml --dry_run", 2, ["r.yaml: `env:` may not set GENQA_CACHE, HF_HUB_OFFLINE"]),
    # item 4: a YAML billion laughs
    ("yaml_billion_laughs", {"r.yaml": BASE + LAUGHS}, "train {tmp}/r.yaml --dry_run", 2,
     ["r.yaml: expands to more than 100,000 values through YAML aliases"]),
    # item 5: templates over the limits, or including another
    ("template_nested_range", {"t.jinja": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                               "{% endfor %}" + LOOP, "r.yaml": _with("template: {tmp}/t.jinja\n")},
     "train {tmp}/r.yaml --dry_run", 2, ["t.jinja", "`range` over more than 100,000 items"]),
    ("template_huge_constant", {"t.jinja": "{{ 'x' * 3000000000 }}" + LOOP,
                                "r.yaml": _with("template: {tmp}/t.jinja\n")},
     "train {tmp}/r.yaml --dry_run", 2, ["t.jinja", "3,000,000,000 items"]),
    ("template_include", {"t.jinja": "{% include 'other.jinja' %}" + LOOP,
                          "r.yaml": _with("template: {tmp}/t.jinja\n")},
     "train {tmp}/r.yaml --dry_run", 2, ["t.jinja, line 1", "`{% include %}` is not allowed"]),
    # item 7: outputs that cannot be written
    ("output_dir_is_a_file", {"base.yaml": BASE, "afile": "x"}, "train {tmp}/base.yaml --output_dir {tmp}/afile "
     "--dry_run", 2, ["output_dir:", "afile is a file, not a folder"]),
    ("output_dir_under_a_file", {"base.yaml": BASE, "afile": "x"}, "train {tmp}/base.yaml --output_dir "
     "{tmp}/afile/run --dry_run", 2, ["afile is a file, so", "cannot be made under it"]),
    ("predict_out_is_a_folder", {"base.yaml": BASE, "sub/x": ""}, PREDICT.replace("{tmp}/o.csv", "{tmp}/sub"), 2,
     ["--out:", "sub is a folder, not a file"]),
    # item 8: recipes that are not UTF-8, nest too deeply, or hold a seed numpy cannot take
    ("recipe_not_utf8", {"r.yaml": BASE.encode() + "instruction: 答\n".encode("gbk")},
     "train {tmp}/r.yaml --dry_run", 2, ["r.yaml: not UTF-8 text"]),
    ("recipe_nested_20000", {"r.yaml": BASE + "model_init_kwargs: " + "[" * 20000 + "]" * 20000 + "\n"},
     "train {tmp}/r.yaml --dry_run", 2, ["nested too deeply"]),
    ("recipe_huge_seed", {"r.yaml": _with("seed: 99999999999999999999999\n")}, "train {tmp}/r.yaml --dry_run", 2,
     ["`seed: 99999999999999999999999` is out of range", "<= 4294967295"]),
    # item 9 (and 15): numeric flags checked when the command line is parsed
    ("predict_batch_size_0", {"base.yaml": BASE}, PREDICT + " --batch_size 0", 2,
     ["argument --batch_size: 0 is out of range"]),
    ("predict_batch_size_negative", {"base.yaml": BASE}, PREDICT + " --batch_size -3", 2,
     ["argument --batch_size: -3 is out of range"]),
    ("predict_max_new_tokens_negative", {"base.yaml": BASE}, PREDICT + " --max_new_tokens -5", 2,
     ["argument --max_new_tokens: -5 is out of range"]),
    ("predict_max_new_tokens_0", {"base.yaml": BASE}, PREDICT + " --max_new_tokens 0", 2,
     ["argument --max_new_tokens: 0 is out of range"]),
    ("predict_num_beams_0", {"base.yaml": BASE}, PREDICT + " --num_beams 0", 2,
     ["argument --num_beams: 0 is out of range"]),
    ("predict_limit_negative", {"base.yaml": BASE}, PREDICT + " --limit -1", 2,
     ["argument --limit: -1 is out of range"]),
    ("merge_check_rows_0", FAKE_RUN, "merge --adapter {tmp}/runs/r --out {tmp}/m --check_rows 0", 2,
     ["argument --check_rows: 0 is out of range"]),
    ("export_check_rows_negative", FAKE_RUN, "export --adapter {tmp}/runs/r --out {tmp}/x.gguf --check_rows -1", 2,
     ["argument --check_rows: -1 is out of range"]),
    ("export_tolerance_nan", FAKE_RUN, "export --adapter {tmp}/runs/r --out {tmp}/x.gguf --tolerance nan", 2,
     ["argument --tolerance: nan is out of range"]),
    ("preview_rows_0", {"base.yaml": BASE}, "preview {tmp}/base.yaml -n 0", 2, ["argument -n/--rows: 0 is out"]),
    # item 10: a LoRA run folder where a complete model belongs
    ("predict_base_is_a_lora_run", {**FAKE_RUN}, "predict --base {tmp}/runs/r --data data/tiny/squad_tiny.json "
     "--out {tmp}/o.csv", 2, ["runs/r is a LoRA run folder", "--adapter {tmp}/runs/r --base tiny:llama"]),
    # item 11: predictions nested too deeply
    ("eval_nested_predictions", {"p.json": "[" * 100000 + "]" * 100000}, "eval --data "
     "tests/bad_inputs/squad_dev.json --predictions {tmp}/p.json", 2, ["p.json' nests JSON values too deeply"]),
    # item 6: an absurd row is refused before any tokenizing, naming it
    ("preview_absurd_row", {"big.jsonl": '{"id": "1", "question": "Q?", "answers": "A", "context": "A b"}\n'
                            '{"id": "huge", "question": "Q?", "answers": "A", "context": "' + "ab " * 700_000 + '"}\n',
                            "r.yaml": _with("task: abstractive\ndataset_path: {tmp}/big.jsonl\n")},
     "preview {tmp}/r.yaml", 2, ["big.jsonl [train]: row 2 (id huge): its context holds 2,100,000 characters"]),
    # item 17: a SQuAD question both unanswerable and answered
    ("squad_impossible_with_answers", {"s.json": '{"version": "v2.0", "data": [{"title": "t", "paragraphs": [{'
                                       '"context": "A b c.", "qas": [{"id": "q1", "question": "Q?", "is_impossible": '
                                       'true, "answers": [{"text": "b", "answer_start": 2}]}]}]}]}',
                                       "r.yaml": _with("dataset_path: {tmp}/s.json\n")},
     "preview {tmp}/r.yaml", 2, ["s.json", "qas[0] (id 'q1'): `is_impossible` is true but it has 1 answer(s)"]),
    # item 18: rows on a workbook's second sheet
    ("xlsx_rows_on_second_sheet", {"b.xlsx": _two_sheets,
                                   "r.yaml": _with("task: abstractive\ndataset_path: {tmp}/b.xlsx\n")},
     "preview {tmp}/r.yaml", 2, ["b.xlsx: its first sheet 'notes' holds no rows", "`dataset_config: data`"]),
    ("xlsx_sheet_picked", {"b.xlsx": _two_sheets, "r.yaml": _with("task: abstractive\ndataset_path: {tmp}/b.xlsx\n"
                                                                   "dataset_config: data\n")},
     "preview {tmp}/r.yaml", 0, ["Q?"]),
    ("mcq_empty_gold_skipped", {"m.csv": "id,context,question,a,b,c,d,answer\n1,C1.,Q1?,r,b,g,k,A\n"
                                         "2,C2.,Q2?,r,b,g,k,\n",
                                "r.yaml": _with("task: mcq\ndataset_path: {tmp}/m.csv\noptions_columns: [a, b, c, d]\n"
                                                "answer_column: answer\non_bad_row: skip\n")},
     "preview {tmp}/r.yaml", 0, ["m.csv [train]: skipped 1 bad rows", "row 1 (id 2): the answer (answer) is empty"]),
    # items 13, 14, 17: values that trained silently wrong
    ("learning_rate_inf", {"r.yaml": _with("learning_rate: .inf\n")}, "train {tmp}/r.yaml --dry_run", 2,
     ["`learning_rate: inf` is not a finite number"]),
    ("zero_steps", {"r.yaml": _with("max_steps: 0\nnum_train_epochs: 0\n")}, "train {tmp}/r.yaml --dry_run", 2,
     ["trains no step"]),
    ("duplicate_key", {"r.yaml": BASE + "max_steps: 5\n"}, "train {tmp}/r.yaml --dry_run", 2,
     ["key `max_steps` is written twice (lines 7 and 14)"]),
]

DRIVER = r"""
import contextlib, io, json, sys, traceback
from genqa.cli import main
results = {}
for name, argv in json.loads(sys.stdin.read()).items():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
    results[name] = [code, buf.getvalue()]
print("@@RESULTS@@" + json.dumps(results))
"""


def test_bad_inputs_through_the_genqa_command(tmp_path):
    import json
    import shlex

    commands = {}
    for case, files, command, _, _ in ROWS:
        folder = tmp_path / case
        for name, content in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if callable(content):
                content(path)
            elif isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content.replace("{tmp}", str(folder)), encoding="utf-8")
        folder.mkdir(exist_ok=True)
        commands[case] = shlex.split(command.replace("{tmp}", str(folder)))
    proc = subprocess.run([sys.executable, "-c", DRIVER], input=json.dumps(commands), cwd=ROOT,
                          capture_output=True, text=True, timeout=240)
    assert "@@RESULTS@@" in proc.stdout, proc.stderr[-3000:]
    results = json.loads(proc.stdout.split("@@RESULTS@@", 1)[1])
    failures = []
    for case, _, _, code, phrases in ROWS:
        got, output = results[case]
        output = output.replace(str(tmp_path / case), "{tmp}")
        missing = [p.replace("{tmp}/", "") for p in phrases if p.replace("{tmp}/", "") not in output.replace(
            "{tmp}/", "")]
        if got != code or "Traceback" in output or missing:
            failures.append(f"{case}: exit {got} (want {code}), missing {missing}:\n{output[-1500:]}")
    assert not failures, "\n\n".join(failures)
