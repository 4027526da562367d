"""Launching the shipped accelerate configs as users type them, on 2 CPU processes, for the distributed tests:

    accelerate launch --config_file accelerate_configs/CONFIG -m genqa.sft RECIPE ...

The tiny LoRA recipe trains for a few steps with evaluation and generation-based evaluation; the two-process DDP run of
the same command (the `ddp_adapter` fixture in conftest.py) is the reference the sharded runs must match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
RECIPE = "recipes/tiny/mcq.yaml"  # LoRA on the tiny Llama, fp32 (bf16: false): sharded runs must match DDP closely
STEPS = 4
ARGS = ["--max_steps", str(STEPS), "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", str(STEPS),
        "--eval_strategy", "steps", "--eval_steps", "2", "--generation_eval_samples", "2", "--use_cpu", "true"]
TIMEOUT_S = 600  # a rank waiting on a collective hangs rather than fails: end the launch, not the suite


def launch(config: str, out: Path, env: dict[str, str] = ENV,
           program: Sequence[str] = ("-m", "genqa.sft")) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file accelerate_configs/CONFIG -m genqa.sft RECIPE` into `out`.

    Output goes to files, not pipes: the workers run in sessions of their own and would hold a pipe open after the
    launcher ends. A launch past TIMEOUT_S gets SIGTERM, which the launcher passes on to its workers.
    """
    cmd = [ACCELERATE, "launch", "--config_file", f"accelerate_configs/{config}", *program, RECIPE, *ARGS,
           "--output_dir", str(out)]
    logs = out.parent / f"{config}.stdout", out.parent / f"{config}.stderr"
    with logs[0].open("w") as stdout, logs[1].open("w") as stderr:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=stdout, stderr=stderr, text=True)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=60)
            pytest.fail(f"{config}: no result after {TIMEOUT_S} s (a hang?)\n{logs[1].read_text()[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, logs[0].read_text(), logs[1].read_text())


def log_history(run: Path) -> list[dict]:
    """The run's logged metrics, step by step (trainer_state.json)."""
    return json.loads((run / "trainer_state.json").read_text())["log_history"]


def assert_trained_like_ddp(run: Path, ddp_log: list[dict]) -> None:
    """A loss logged at every step, going down, equal to DDP's, with the same tokens per step (both ranks' batches
    seen); generation-based evaluation logged at both evaluations (steps 2 and 4)."""
    log = log_history(run)
    losses = [h["loss"] for h in log if "loss" in h]
    assert len(losses) == STEPS and losses[-1] < losses[0], losses
    assert [h["eval_gen_total"] for h in log if "eval_gen_accuracy" in h] == [2, 2]
    assert [h["num_tokens"] for h in log if "loss" in h] == [h["num_tokens"] for h in ddp_log if "loss" in h]
    assert losses == pytest.approx([h["loss"] for h in ddp_log if "loss" in h], rel=1e-3)


def assert_adapter_like_ddp(run: Path, reference: dict[str, torch.Tensor], base_model_path: str) -> None:
    """The run folder holds a loadable adapter, gathered to full shape (sharded runs keep only shards on each rank),
    trained away from its init (lora_B starts at zero) and equal to the DDP one."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    saved = load_file(run / "adapter_model.safetensors")
    assert saved.keys() == reference.keys() and saved
    for name, tensor in saved.items():
        assert tensor.shape == reference[name].shape and tensor.numel() > 0, (name, tensor.shape)
        assert torch.allclose(tensor, reference[name], rtol=1e-3, atol=1e-4), name  # ZeRO-3 vs DDP: ~1e-5
    assert all(t.abs().sum() > 0 for n, t in saved.items() if "lora_B" in n)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_model_path), run)
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(saved)
    assert sum(float(p.abs().sum()) for p in loaded.values()) == pytest.approx(
        sum(float(t.abs().sum()) for t in saved.values()), rel=1e-6)
