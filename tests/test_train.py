"""Tiny end-to-end training runs: LoRA and QLoRA lower the loss, the run folder is complete, resume works."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genqa.data.templates import load_template, portable_template
from genqa.sft import main


def _losses(run: Path) -> list[float]:
    state = json.loads((run / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def _train(recipe: str, out: Path, *extra: str) -> Path:
    assert main([recipe, "--output_dir", str(out), *extra]) == 0
    return out


def test_tiny_lora_lowers_loss_and_leaves_a_loadable_adapter(tmp_path):
    run = _train("recipes/tiny/mcq.yaml", tmp_path / "lora", "--max_steps", "20", "--logging_steps", "2",
                 "--save_strategy", "no")
    losses = _losses(run)
    assert losses[-1] < 0.8 * losses[0], losses
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "genqa_recipe.yaml",
                 "genqa_data_report.json", "genqa_validation.jsonl", "trainer_state.json"):
        assert (run / name).exists(), name
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(run)
    tok = AutoTokenizer.from_pretrained(run)
    # the run's tokenizer carries the template it was trained with, without transformers-only `{% generation %}` tags
    # (TGI's minijinja rejects them): the same text
    assert tok.chat_template == portable_template(load_template("llama2")) and "{% generation" not in tok.chat_template
    assert model(**tok("你好", return_tensors="pt")).logits.shape[-1] == len(tok)
    report = json.loads((run / "genqa_data_report.json").read_text())
    assert report[0]["rows_missing_end_token"] == 0 and report[0]["kept"] == report[0]["rows"]


def test_tiny_qlora_lowers_loss(tmp_path):
    run = _train("recipes/tiny/mcq_generation.yaml", tmp_path / "qlora", "--max_steps", "20",
                 "--logging_steps", "2", "--save_strategy", "no")
    losses = _losses(run)
    assert losses[-1] < 0.8 * losses[0], losses
    cfg = json.loads((run / "adapter_config.json").read_text())
    assert cfg["r"] == 8
    assert {m.rsplit(".", 1)[-1] for m in cfg["target_modules"]} >= {"q_proj", "k_proj", "v_proj", "o_proj",
                                                                      "gate_proj", "up_proj", "down_proj"}


def test_resume_continues_from_checkpoint(tmp_path, capsys):
    out = tmp_path / "resume"
    _train("recipes/tiny/abstractive.yaml", out, "--max_steps", "4", "--save_steps", "2", "--save_total_limit", "3")
    assert (out / "checkpoint-4").is_dir()
    capsys.readouterr()
    _train("recipes/tiny/abstractive.yaml", out, "--max_steps", "6", "--save_steps", "2", "--save_total_limit", "3")
    assert "resuming from the last checkpoint" in capsys.readouterr().out
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == sorted(set(steps))  # no step trained twice


def test_finished_run_is_not_overwritten(tmp_path, capsys):
    out = tmp_path / "done"
    _train("recipes/tiny/abstractive.yaml", out, "--max_steps", "2", "--save_strategy", "no")
    weights = (out / "adapter_model.safetensors").read_bytes()
    assert main(["recipes/tiny/abstractive.yaml", "--output_dir", str(out), "--max_steps", "2",
                 "--save_strategy", "no"]) == 0  # the same command again: reported, nothing changed
    assert "holds a finished run" in capsys.readouterr().out
    assert (out / "adapter_model.safetensors").read_bytes() == weights
    assert main(["recipes/tiny/abstractive.yaml", "--output_dir", str(out), "--max_steps", "3",
                 "--save_strategy", "no"]) == 2  # more steps, but no checkpoint to continue from
    assert "already holds a run finished at step 2" in capsys.readouterr().err


def _lora_grads(model, batch) -> dict[str, torch.Tensor]:
    model.zero_grad()
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("fix", [True, False])
def test_qlora_gradients_survive_an_evaluation_pass(tiny_llama_path, fix):
    """LoRA gradients through 4-bit layers after a no-grad eval forward equal those before it.

    fix=False shows the bitsandbytes CPU trap the fix exists for (skipped on CPUs without AVX512-BF16)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from genqa.backbones.loading import disable_cpu_4bit_inference_repack

    tok = AutoTokenizer.from_pretrained(tiny_llama_path)
    batch = tok(["Câu hỏi: Sông Hồng đổ ra đâu?", "問題：小明怎麼去學校？"], return_tensors="pt", padding=True)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path, quantization_config=quant, dtype=torch.float32)
    if fix:
        assert disable_cpu_4bit_inference_repack(model) > 0
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(model, lora)
    before = _lora_grads(model, batch)
    model.eval()
    with torch.no_grad():
        model(**batch)  # what SFTTrainer's evaluation does
    after = _lora_grads(model, batch)
    worst = max(float((after[n] - g).norm() / g.norm()) for n, g in before.items())
    assert all(g.abs().sum() > 0 for g in before.values())
    if fix:
        assert worst < 1e-4, worst
    elif worst < 1e-4:
        pytest.skip("this CPU does not repack 4-bit weights for inference (no AVX512-BF16): no trap to show")
    else:
        assert worst > 0.1  # without the fix the frozen-layer gradients are dropped


def test_generation_based_evaluation_is_logged(tmp_path):
    run = _train("recipes/tiny/mcq.yaml", tmp_path / "geneval", "--max_steps", "4", "--eval_strategy", "steps",
                 "--eval_steps", "2", "--generation_eval_samples", "3", "--save_strategy", "no")
    state = json.loads((run / "trainer_state.json").read_text())
    gen = [h for h in state["log_history"] if "eval_gen_accuracy" in h]
    assert len(gen) == 2 and all(h["eval_gen_total"] == 3 for h in gen)


def test_resume_with_a_different_recipe_is_refused(tmp_path, capsys):
    out = tmp_path / "changed"
    _train("recipes/tiny/abstractive.yaml", out, "--max_steps", "2", "--save_steps", "2")
    before = (out / "genqa_recipe.yaml").read_text()
    assert main(["recipes/tiny/abstractive.yaml", "--output_dir", str(out), "--max_steps", "4", "--save_steps", "2",
                 "--template", "alpaca", "--learning_rate", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "different recipe" in err and "template" in err and "learning_rate" in err
    assert (out / "genqa_recipe.yaml").read_text() == before  # nothing rewritten
    # run-control keys (more steps) may change
    _train("recipes/tiny/abstractive.yaml", out, "--max_steps", "4", "--save_steps", "2")


def test_starting_over_never_overwrites_a_finished_run(tmp_path, capsys):
    out = tmp_path / "never"
    _train("recipes/tiny/abstractive.yaml", out, "--max_steps", "2", "--save_strategy", "no")
    weights = (out / "adapter_model.safetensors").read_bytes()
    assert main(["recipes/tiny/abstractive.yaml", "--output_dir", str(out), "--max_steps", "2",
                 "--resume_from_checkpoint", "never"]) == 2
    assert "would overwrite" in capsys.readouterr().err
    assert (out / "adapter_model.safetensors").read_bytes() == weights
