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
