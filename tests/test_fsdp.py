"""The shipped FSDP config (accelerate_configs/fsdp.yaml, FSDP2), launched as a user types it:

    accelerate launch --config_file accelerate_configs/fsdp.yaml -m genqa.sft RECIPE

On a CPU machine accelerate does not do FSDP (it enables it only on GPUs and other accelerators) and would quietly run
plain DDP: genqa refuses instead. PyTorch's FSDP2 itself runs on CPU (gloo), so the second test lifts just accelerate's
device check (tests/fsdp_on_cpu.py) and checks what FSDP users get on GPUs: two processes train the tiny LoRA recipe
on sharded weights, with generation-based evaluation between training steps, and end with the same adapter as
two-process DDP: a loadable, gathered (full-shape) and trained adapter in the run folder, the loss logged at every step.
"""

from __future__ import annotations

import pytest
from launching import STEPS, assert_adapter_like_ddp, assert_trained_like_ddp, launch

pytestmark = pytest.mark.slow


def test_fsdp_config_on_cpu_is_refused_not_run_as_ddp(tmp_path):
    run = tmp_path / "run"
    result = launch("fsdp.yaml", run)
    assert result.returncode != 0
    assert "genqa.sft: error: the accelerate config asks for FSDP, but accelerate enables FSDP only on GPUs" in (
        result.stderr)
    assert not (run / "adapter_model.safetensors").exists() and not list(run.glob("checkpoint-*"))


def test_fsdp2_trains_lora_like_ddp(ddp_adapter, tiny_llama_path, tmp_path):
    run = tmp_path / "run"
    result = launch("fsdp.yaml", run, program=["tests/fsdp_on_cpu.py"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[genqa] processes: 2 (CPU)" in result.stdout and result.stdout.count("[genqa] run folder") == 1

    # FSDP really ran: the checkpoint holds accelerate's FSDP model and optimizer state (gathered: FULL_STATE_DICT)
    checkpoint = run / f"checkpoint-{STEPS}"
    assert (checkpoint / "pytorch_model_fsdp.bin").is_file() and (checkpoint / "optimizer.bin").is_file(), sorted(
        checkpoint.iterdir())

    # it trained like DDP; generation-based evaluation ran at step 2 and training went on (FSDP2 gathering the LM
    # head for the first time in inference mode broke the next step), then again at step 4
    assert_trained_like_ddp(run, ddp_adapter["log"])

    # the run folder holds a loadable, full-shape, trained adapter equal to the DDP one (FSDP keeps only shards)
    assert_adapter_like_ddp(run, ddp_adapter["weights"], tiny_llama_path)
