"""The shipped DeepSpeed configs, launched as a user types them on a CPU machine:

    DS_ACCELERATOR=cpu accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml -m genqa.sft RECIPE

Two CPU processes train the tiny LoRA recipe under ZeRO-2 and ZeRO-3 (with generation-based evaluation, whose forward
passes under ZeRO-3 need every rank) and must end with the same adapter as two-process DDP: a loadable, gathered
(full-shape) and trained adapter, DeepSpeed state saved by both ranks, the loss logged at every step.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed")
if not shutil.which(os.environ.get("CXX", "c++")):
    pytest.skip("DeepSpeed JIT-compiles its CPU communication op: no C++ compiler found", allow_module_level=True)

from safetensors.torch import load_file  # noqa: E402

from genqa.tiny import cache_dir  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
       "DS_ACCELERATOR": "cpu",
       # DeepSpeed's CPU op is compiled on first use (~40 s) and reused from here by every later launch.
       "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))}
RECIPE = "recipes/tiny/mcq.yaml"  # LoRA on the tiny Llama, fp32 (bf16: false): DeepSpeed must match DDP closely
STEPS = 4
ARGS = ["--max_steps", str(STEPS), "--logging_steps", "1", "--save_strategy", "steps", "--save_steps", str(STEPS),
        "--eval_strategy", "steps", "--eval_steps", "2", "--generation_eval_samples", "2", "--use_cpu", "true"]
TIMEOUT_S = 600  # a rank waiting on a collective hangs rather than fails: end the launch, not the suite


def _launch(config: str, out: Path) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file accelerate_configs/CONFIG -m genqa.sft RECIPE` into `out`.

    Output goes to files, not pipes: the workers run in sessions of their own and would hold a pipe open after the
    launcher ends. A launch past TIMEOUT_S gets SIGTERM, which the launcher passes on to its workers.
    """
    cmd = [ACCELERATE, "launch", "--config_file", f"accelerate_configs/{config}", "-m", "genqa.sft", RECIPE, *ARGS,
           "--output_dir", str(out)]
    logs = out.parent / f"{config}.stdout", out.parent / f"{config}.stderr"
    with logs[0].open("w") as stdout, logs[1].open("w") as stderr:
        proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=stdout, stderr=stderr, text=True)
        try:
            proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(timeout=60)
            pytest.fail(f"{config}: no result after {TIMEOUT_S} s (a hang?)\n{logs[1].read_text()[-3000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, logs[0].read_text(), logs[1].read_text())


def _log_history(run: Path) -> list[dict]:
    return json.loads((run / "trainer_state.json").read_text())["log_history"]


@pytest.fixture(scope="module")
def ddp_adapter(tmp_path_factory) -> dict:
    """The same recipe under two-process DDP: the reference for the DeepSpeed runs."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    result = _launch("ddp.yaml", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"weights": load_file(out / "adapter_model.safetensors"), "log": _log_history(out)}


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_config_trains_lora_like_ddp(stage, ddp_adapter, tiny_llama_path, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run = tmp_path / "run"
    result = _launch(f"deepspeed_{stage}.yaml", run)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[genqa] processes: 2 (CPU)" in result.stdout and result.stdout.count("[genqa] run folder") == 1

    # DeepSpeed really ran, on both ranks: each saved its partition of the optimizer state
    ds_state = run / f"checkpoint-{STEPS}" / f"global_step{STEPS}"
    for rank in (0, 1):
        assert (ds_state / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").is_file(), sorted(ds_state.iterdir())

    # it trained: a loss at every step, going down; generation-based evaluation ran (every rank takes part)
    log = _log_history(run)
    losses = [h["loss"] for h in log if "loss" in h]
    assert len(losses) == STEPS and losses[-1] < losses[0], losses
    assert [h["eval_gen_total"] for h in log if "eval_gen_accuracy" in h] == [2, 2]
    # both ranks' batches were seen: the same tokens per step as DDP, and the same losses
    ddp_log = ddp_adapter["log"]
    assert [h["num_tokens"] for h in log if "loss" in h] == [h["num_tokens"] for h in ddp_log if "loss" in h]
    assert losses == pytest.approx([h["loss"] for h in ddp_log if "loss" in h], rel=1e-3)

    # the run folder holds a loadable adapter, gathered to full shape (ZeRO-3 keeps only shards on each rank), trained
    # away from its init (lora_B starts at zero) and equal to the DDP one
    saved = load_file(run / "adapter_model.safetensors")
    reference = ddp_adapter["weights"]
    assert saved.keys() == reference.keys() and saved
    for name, tensor in saved.items():
        assert tensor.shape == reference[name].shape and tensor.numel() > 0, (name, tensor.shape)
        assert torch.allclose(tensor, reference[name], rtol=1e-3, atol=1e-4), name  # ZeRO-3 vs DDP: ~1e-5
    assert all(t.abs().sum() > 0 for n, t in saved.items() if "lora_B" in n)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_path), run)
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(loaded) == len(saved)
    assert sum(float(p.abs().sum()) for p in loaded.values()) == pytest.approx(
        sum(float(t.abs().sum()) for t in saved.values()), rel=1e-6)
