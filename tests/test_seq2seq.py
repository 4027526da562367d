"""The T5 / encoder-decoder backbone: `python -m genqa.sft recipes/tiny/t5.yaml` in-process, end to end.

Training lowers the loss and leaves a loadable model; the tiny T5 learns its training questions (unanswerable ones
to "unanswerable", read back as ""); resuming continues from the checkpoint; inputs are cut in the context, never
the question; LoRA trains and saves an adapter; prediction keeps row order; user mistakes get clear errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from genqa.backbones.loading import resolve_model_path
from genqa.backbones.seq2seq import Seq2SeqEncoder, max_target_length, predict_seq2seq
from genqa.config import QAArguments
from genqa.data.rows import load_canonical_splits
from genqa.data.tasks import CANONICAL_FEATURES, get_task
from genqa.data.templates import load_template, portable_template
from genqa.recipe import parse_recipe
from genqa.run_dir import load_run
from genqa.sft import main as sft_main

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "tiny" / "t5.yaml"
BIG_RECIPE = ROOT / "recipes" / "squad_v2_t5.yaml"
DATA = ROOT / "data" / "tiny" / "squad_tiny.json"
STEPS = 160  # the tiny T5 answers all its training questions by then (lr 3e-3, batch 8, Adafactor)


def _train(out: Path, *extra: str) -> None:
    assert sft_main([str(RECIPE), "--dataset_path", str(DATA), "--output_dir", str(out), *extra]) == 0


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    state = json.loads((run_dir / "trainer_state.json").read_text(encoding="utf-8"))
    return [(e["step"], e["loss"]) for e in state["log_history"] if "loss" in e]


def _train_rows(run_dir: Path):
    qa, sft, _ = load_run(run_dir)
    task = get_task(qa)
    train, _, _ = load_canonical_splits(qa, task)
    return qa, sft, task, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A full fine-tuning run trained in two halves: 80 steps, then resumed from checkpoint-80 to 160."""
    out = tmp_path_factory.mktemp("t5") / "run"
    _train(out, "--max_steps", str(STEPS // 2), "--save_steps", str(STEPS // 2))
    ckpt = out / f"checkpoint-{STEPS // 2}"
    assert ckpt.is_dir()
    # Mark the checkpoint's trainer state: only a run that really resumes from it carries the mark forward.
    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    state["log_history"].append({"genqa_test_marker": 1, "step": STEPS // 2})
    (ckpt / "trainer_state.json").write_text(json.dumps(state), encoding="utf-8")
    _train(out, "--max_steps", str(STEPS), "--save_steps", str(STEPS // 2))
    return out


@pytest.mark.slow
def test_training_lowers_the_loss_and_leaves_a_loadable_model(trained):
    losses = _losses(trained)
    assert losses[-1][1] < losses[0][1] / 4, losses
    for name in ("model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "genqa_recipe.yaml",
                 "genqa_data_report.json", "genqa_validation.jsonl"):
        assert (trained / name).is_file(), name
    reports = json.loads((trained / "genqa_data_report.json").read_text(encoding="utf-8"))
    assert [r["split"] for r in reports] == ["train", "validation"]
    assert reports[0]["kept"] == reports[0]["rows"] > 0 and reports[0]["rows_missing_end_token"] == 0
    model = AutoModelForSeq2SeqLM.from_pretrained(trained)
    assert model.config.is_encoder_decoder
    tokenizer = AutoTokenizer.from_pretrained(trained)
    assert tokenizer.chat_template == portable_template(load_template("t5"))


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(trained):
    state = json.loads((trained / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == STEPS
    assert any(e.get("genqa_test_marker") == 1 for e in state["log_history"]), "the run did not resume"
    steps = [s for s, _ in _losses(trained)]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # each logging step once: no restart from scratch


@pytest.mark.slow
def test_tiny_t5_learns_its_training_questions(trained):
    qa, sft, task, rows = _train_rows(trained)
    model = AutoModelForSeq2SeqLM.from_pretrained(trained)
    tokenizer = AutoTokenizer.from_pretrained(trained)
    raw = predict_seq2seq(model, tokenizer, tokenizer.chat_template, task, rows, sft.max_length, batch_size=8)
    answers = [task.parse(text) for text in raw]
    golds = [ex["answers"][0] if ex["answers"] else "" for ex in rows]
    right = sum(a == g for a, g in zip(answers, golds, strict=True))
    assert right >= 0.75 * len(rows), list(zip(raw, golds, strict=True))
    no_answer = [i for i, g in enumerate(golds) if g == ""]
    assert no_answer, "the tiny data must hold unanswerable questions"
    for i in no_answer:  # trained to the no-answer text, read back as the empty answer
        assert raw[i] == qa.no_answer_text and answers[i] == ""


@pytest.mark.slow
def test_batched_prediction_keeps_row_order(trained):
    _, sft, task, rows = _train_rows(trained)
    rows = rows.select(range(7))
    model = AutoModelForSeq2SeqLM.from_pretrained(trained)
    tokenizer = AutoTokenizer.from_pretrained(trained)
    one = predict_seq2seq(model, tokenizer, tokenizer.chat_template, task, rows, sft.max_length, batch_size=1)
    batched = predict_seq2seq(model, tokenizer, tokenizer.chat_template, task, rows, sft.max_length, batch_size=3)
    tokenizer.padding_side = "left"  # as genqa.generate sets it: the encoder's attention mask makes it equivalent
    left = predict_seq2seq(model, tokenizer, tokenizer.chat_template, task, rows, sft.max_length, batch_size=3)
    assert batched == one == left and len(one) == 7


# ---- encoding: targets, end-of-sequence, context-first truncation ------------------------------------------------

FILLER = "The harbour was busy with fishing boats and the gulls were loud over the grey water. "
QUESTION = "Where is the spare key hidden?"
ANSWER = "under the red mat"


def _row(idx: int, question: str = QUESTION, answer: str | None = ANSWER, context: str | None = None) -> dict:
    context = context or (FILLER * 12 + f"The spare key is hidden {ANSWER} by the door. " + FILLER * 12)
    answers = [answer] if answer else []
    starts = [context.index(answer)] if answer else []
    return {"id": str(idx), "context": context, "question": question, "options": [], "answers": answers,
            "answer_starts": starts, "label": -1}


@pytest.fixture(scope="module")
def t5_tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("tiny:t5"))


@pytest.mark.parametrize("prompt_format", [None, "question: {question} context: {context}"])
def test_long_inputs_lose_context_never_the_question(t5_tokenizer, prompt_format):
    qa = QAArguments(task="extractive", template="t5", prompt_format=prompt_format)
    task = get_task(qa)
    encoder = Seq2SeqEncoder(task, t5_tokenizer, load_template("t5"), max_length=96, max_target_length=16)
    for row in (_row(0), _row(1, answer=None)):
        enc = encoder.encode(row)
        assert enc["status"] == "context_truncated"
        assert len(enc["input_ids"]) <= 96 and enc["input_ids"][-1] == t5_tokenizer.eos_token_id
        text = t5_tokenizer.decode(enc["input_ids"], skip_special_tokens=True)
        assert QUESTION in text
        if prompt_format is None:
            assert task.instruction in text  # the default format's instruction is kept too
        assert len(text) < len(encoder.prompt_text(row))
        target = t5_tokenizer.decode(enc["labels"], skip_special_tokens=True)
        assert enc["labels"][-1] == t5_tokenizer.eos_token_id  # the decoder learns to stop
        if row["answers"]:
            assert ANSWER in text and target == ANSWER  # training: the gold span survives the cut
            blind, cut = encoder.encode_prompt(row)  # generation: the gold span does not choose the context kept
            assert cut and len(blind) <= 96 and ANSWER not in t5_tokenizer.decode(blind, skip_special_tokens=True)
        else:
            assert target == qa.no_answer_text == "unanswerable" and task.parse(target) == ""


def test_rows_that_cannot_fit_are_dropped_and_counted(t5_tokenizer):
    qa = QAArguments(task="extractive", template="t5", prompt_format="question: {question} context: {context}")
    task = get_task(qa)
    long_answer = "a very long answer that keeps going on and on about the boats, the gulls and the grey water"
    rows = [
        _row(0),
        _row(1, answer=None),
        _row(2, question="Why " * 120 + "?"),  # the question alone is longer than max_length
        _row(3, answer=long_answer, context=FILLER + long_answer + ". " + FILLER * 20),  # target > max_target_length
        _row(4, context="The spare key is hidden under the red mat."),  # short: kept whole
    ]
    encoder = Seq2SeqEncoder(task, t5_tokenizer, load_template("t5"), max_length=96, max_target_length=16)
    kept, report = encoder.encode_dataset(Dataset.from_list(rows, features=CANONICAL_FEATURES))
    assert (report.rows, report.kept, report.context_truncated, report.dropped_too_long) == (5, 3, 2, 2)
    assert report.rows_missing_end_token == 0 and report.max_tokens <= 96
    assert any("max_target_length=16" in n for n in report.notes)
    assert any("max_length=96" in n and "dropped" in n for n in report.notes)
    assert kept.column_names == ["input_ids", "attention_mask", "labels"]


def test_max_target_length_key():
    qa = QAArguments()
    assert max_target_length(qa) == 32
    qa.max_target_length = 8  # the recipe key, once it is a QAArguments field
    assert max_target_length(qa) == 8
    qa.max_target_length = 0
    assert max_target_length(qa) is None


# ---- LoRA, recipes, errors ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_lora_variant_trains_and_saves_an_adapter(tmp_path):
    from peft import PeftModel

    out = tmp_path / "lora"
    _train(out, "--use_peft", "true", "--max_steps", "12", "--logging_steps", "4", "--save_strategy", "no")
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert not (out / "model.safetensors").exists()
    assert json.loads((out / "adapter_config.json").read_text(encoding="utf-8"))["task_type"] == "SEQ_2_SEQ_LM"
    losses = [loss for _, loss in _losses(out)]
    assert losses[-1] < losses[0], losses
    base = AutoModelForSeq2SeqLM.from_pretrained(resolve_model_path("tiny:t5"))
    model = PeftModel.from_pretrained(base, out)
    _, sft, task, rows = _train_rows(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = predict_seq2seq(model, tokenizer, tokenizer.chat_template, task, rows.select(range(3)), sft.max_length,
                            max_new_tokens=4)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)


def test_recipes_pass_dry_run(capsys):
    for recipe in (RECIPE, BIG_RECIPE):
        assert sft_main([str(recipe), "--dry_run"]) == 0
        assert "is valid" in capsys.readouterr().out


def test_squad_v2_recipe_reads_the_hub_layout(tmp_path, t5_tokenizer):
    """The hub recipe's column mapping on rows in `rajpurkar/squad_v2`'s layout (a local copy; no download)."""
    context = "Marta Ruiz painted the mural in 2004 on the library wall."
    rows = [{"id": f"q{i}", "title": "Mural", "context": context, "question": q,
             "answers": {"text": [a], "answer_start": [context.index(a)]} if a else {"text": [], "answer_start": []}}
            for i, (q, a) in enumerate([("Who painted the mural?", "Marta Ruiz"), ("When?", "2004"),
                                        ("Who paid for it?", None), ("Where is it?", "on the library wall")])]
    path = tmp_path / "squad_v2_like.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    qa, sft, _, _ = parse_recipe([str(BIG_RECIPE), "--dataset_path", str(path), "--validation_size", "0",
                                  "--use_cpu", "true"])  # the recipe asks for bf16, which needs a GPU or use_cpu
    task = get_task(qa)
    train, val, _ = load_canonical_splits(qa, task)
    assert val is None and [task.target(ex) for ex in train] == ["Marta Ruiz", "2004", "unanswerable",
                                                                 "on the library wall"]
    encoder = Seq2SeqEncoder(task, t5_tokenizer, load_template(qa.template), sft.max_length, max_target_length(qa))
    text = t5_tokenizer.decode(encoder.encode(train[0])["input_ids"], skip_special_tokens=True)
    assert text == f"question: Who painted the mural? context: {context}"


def test_decoder_only_model_is_a_clear_error(tmp_path, capsys):
    argv = [str(RECIPE), "--dataset_path", str(DATA), "--output_dir", str(tmp_path / "x"),
            "--model_name_or_path", "tiny:llama", "--backbone", "seq2seq"]
    assert sft_main(argv) == 2
    err = capsys.readouterr().err
    assert "is not one" in err and "backbone" in err
    assert not (tmp_path / "x").exists()


def test_causal_only_keys_are_rejected(tmp_path, capsys):
    argv = [str(RECIPE), "--dataset_path", str(DATA), "--output_dir", str(tmp_path / "x"), "--packing", "true"]
    assert sft_main(argv) == 2
    assert "`packing` applies to causal LMs only" in capsys.readouterr().err


def test_t5_lora_merge_matches_adapter(tmp_path):
    """genqa.merge checks a T5 adapter on its validation rows encoded as the seq2seq trainer encodes them."""
    from genqa.merge import main as merge_main

    run = tmp_path / "run"
    _train(run, "--use_peft", "true", "--max_steps", "6", "--learning_rate", "1e-2", "--save_strategy", "no")
    assert merge_main(["--adapter", str(run), "--out", str(tmp_path / "merged")]) == 0
    report = json.loads((tmp_path / "merged" / "genqa_merge_report.json").read_text())
    assert report["merged_vs_adapter_max_abs_diff"] < 1e-4
    assert (tmp_path / "merged" / "model.safetensors").exists()
