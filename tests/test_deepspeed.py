"""The shipped DeepSpeed configs, launched as a user types them on a CPU machine:

    DS_ACCELERATOR=cpu accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml -m genqa.sft RECIPE

Two CPU processes train the tiny LoRA recipe under ZeRO-2 and ZeRO-3 (with generation-based evaluation, whose forward
passes under ZeRO-3 need every rank) and must end with the same adapter as two-process DDP: a loadable, gathered
(full-shape) and trained adapter, DeepSpeed state saved by both ranks, the loss logged at every step.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("deepspeed")
if not shutil.which(os.environ.get("CXX", "c++")):
    pytest.skip("DeepSpeed JIT-compiles its CPU communication op: no C++ compiler found", allow_module_level=True)

from launching import ENV, STEPS, assert_adapter_like_ddp, assert_trained_like_ddp, launch  # noqa: E402

from genqa.backbones.tiny import cache_dir  # noqa: E402

pytestmark = pytest.mark.slow

DS_ENV = {**ENV, "DS_ACCELERATOR": "cpu",
          # DeepSpeed's CPU op is compiled on first use (~40 s) and reused from here by every later launch.
          "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(cache_dir() / "torch_extensions"))}


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_config_trains_lora_like_ddp(stage, ddp_adapter, tiny_llama_path, tmp_path):
    run = tmp_path / "run"
    result = launch(f"deepspeed_{stage}.yaml", run, env=DS_ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[genqa] processes: 2 (CPU)" in result.stdout and result.stdout.count("[genqa] run folder") == 1

    # DeepSpeed really ran, on both ranks: each saved its partition of the optimizer state
    ds_state = run / f"checkpoint-{STEPS}" / f"global_step{STEPS}"
    for rank in (0, 1):
        assert (ds_state / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt").is_file(), sorted(ds_state.iterdir())

    # it trained like DDP, both ranks' batches seen, generation-based evaluation on every rank
    assert_trained_like_ddp(run, ddp_adapter["log"])

    # the run folder holds a loadable, full-shape, trained adapter equal to the DDP one (ZeRO-3 keeps only shards)
    assert_adapter_like_ddp(run, ddp_adapter["weights"], tiny_llama_path)
