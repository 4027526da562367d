"""The launch paths users type: `accelerate launch -m genqa.sft` (1 process and 2-process CPU DDP), and every tiny
recipe training for a few steps into a loadable run folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from genqa.sft import main

ROOT = Path(__file__).resolve().parents[1]
TINY = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "recipes" / "tiny").glob("*.yaml"))
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.mark.parametrize("recipe", TINY)
def test_every_tiny_recipe_trains_into_a_loadable_run(recipe, tmp_path):
    out = tmp_path / "run"
    assert main([recipe, "--output_dir", str(out), "--max_steps", "4", "--save_strategy", "no"]) == 0
    assert (out / "genqa_recipe.yaml").exists() and (out / "tokenizer_config.json").exists()
    assert (out / "adapter_model.safetensors").exists() or any(out.glob("model*.safetensors"))


def _num_tokens(run: Path) -> float:
    state = json.loads((run / "trainer_state.json").read_text())
    return [h["num_tokens"] for h in state["log_history"] if "num_tokens" in h][-1]


def test_accelerate_launch_one_and_two_cpu_processes(tmp_path):
    """`accelerate launch -m genqa.sft` works as typed; with the DDP config two CPU processes share one run (each
    step sees twice the tokens), not two independent runs."""
    common = ["-m", "genqa.sft", "recipes/tiny/abstractive.yaml", "--max_steps", "4", "--save_strategy", "no",
              "--logging_steps", "4"]
    one = subprocess.run([ACCELERATE, "launch", "--num_processes", "1", *common, "--output_dir", str(tmp_path / "one")],
                         env=ENV, capture_output=True, text=True, cwd=ROOT)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([ACCELERATE, "launch", "--config_file", "accelerate_configs/ddp.yaml", *common,
                          "--output_dir", str(tmp_path / "two")], env=ENV, capture_output=True, text=True, cwd=ROOT)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "[genqa] processes: 2 (CPU)" in two.stdout and two.stdout.count("[genqa] run folder") == 1
    ratio = _num_tokens(tmp_path / "two") / _num_tokens(tmp_path / "one")
    assert 1.5 < ratio < 2.5, ratio
