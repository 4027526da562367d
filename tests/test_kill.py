"""Training killed (SIGKILL) at random moments, checkpoint writes included, then rerun: the run ends exactly where an
uninterrupted run ends (same steps, same per-step losses, same adapter).

Every run is `genqa.sft.main` with the command-line arguments of `python -m genqa.sft`, in its own process. The final
rerun is a real `python -m genqa.sft` subprocess; the killed runs and the reference run are forked from a
multiprocessing fork server that has imported the libraries once (a fresh interpreter spends 10-20 s importing
torch, transformers and TRL on this machine, which would leave room for four kills, not ten, in the test's time).
A kill lands at a random moment of the start-up (data, model, trainer, checkpoint loading) or, timed from a new
`checkpoint-N/` folder appearing, of the training steps and checkpoint saves that follow (save_steps 1, so most steps
end in a save; the issue saw resume failures after kills 0-100 ms after a checkpoint folder appeared). A rerun trains at
most three steps before its kill, so ten kills never reach the end of the 40 steps.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genqa.run_dir import FINISHED_FILE, find_checkpoints
from genqa.sft import main as sft_main

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 40
KILLS = 10


def _run_sft(argv: list[str]) -> None:
    """Process target: `python -m genqa.sft ARGV` (its exit code becomes the process's)."""
    sys.exit(sft_main(argv))


def _argv(out: Path) -> list[str]:
    return [str(ROOT / "recipes/tiny/mcq.yaml"), "--output_dir", str(out), "--max_steps", str(MAX_STEPS),
            "--save_steps", "1", "--save_total_limit", "2", "--logging_steps", "1", "--disable_tqdm", "true"]


def _checkpoint_steps(out: Path) -> set[int]:
    return {int(p.name.split("-")[1]) for p in out.glob("checkpoint-*") if p.name.split("-")[1].isdigit()}


def _wait_for_checkpoints(proc, out: Path, before: set[int], count: int) -> None:
    """Wait (while `proc` runs) until `count` checkpoint folders not in `before` have appeared."""
    deadline = time.time() + 60
    while proc.is_alive() and time.time() < deadline and len(_checkpoint_steps(out) - before) < count:
        time.sleep(0.002)


def _timed_reference(ctx, out: Path) -> tuple[float, float]:
    """Run uninterrupted into `out`; return (seconds until its first checkpoint, seconds per step after it)."""
    start = time.time()
    proc = ctx.Process(target=_run_sft, args=(_argv(out),))
    proc.start()
    _wait_for_checkpoints(proc, out, set(), 1)
    first = time.time()
    proc.join()
    assert proc.exitcode == 0
    return first - start, (time.time() - first) / (MAX_STEPS - 1)


def _kill_once(ctx, out: Path, new_checkpoints: int, delay: float) -> str:
    """Start a rerun and SIGKILL it `delay` s after `new_checkpoints` new checkpoint folders appeared (0: after its
    start). Returns "killed", or "finished" if it ended by itself first (then it must have succeeded)."""
    before = _checkpoint_steps(out) if out.exists() else set()
    proc = ctx.Process(target=_run_sft, args=(_argv(out),))
    proc.start()
    _wait_for_checkpoints(proc, out, before, new_checkpoints)
    time.sleep(delay)
    alive = proc.is_alive()
    proc.kill()
    proc.join()
    if not alive:
        assert proc.exitcode == 0, f"a rerun failed by itself (exit code {proc.exitcode})"
        return "finished"
    return "killed"


def _losses(out: Path) -> dict[int, float]:
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    steps = [h["step"] for h in history if "loss" in h]
    assert steps == sorted(set(steps)), steps  # no step logged twice
    return {h["step"]: h["loss"] for h in history if "loss" in h}


@pytest.mark.slow
def test_reruns_after_kills_end_like_an_uninterrupted_run(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the fork server and the final subprocess compute alike
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["genqa.sft", "genqa.backbones.causal_lm", "genqa.backbones.loading"])

    warm_up = ctx.Process(target=time.sleep, args=(0,))  # start the fork server (its imports) before any timing
    warm_up.start()
    warm_up.join()
    reference = tmp_path / "reference"
    startup, step = _timed_reference(ctx, reference)

    seed = int(os.environ.get("GENQA_KILL_SEED") or random.randrange(10**6))  # printed; set it to replay a run
    rng = random.Random(seed)
    out = tmp_path / "killed"
    outcomes, incomplete_seen = [], set()
    while outcomes.count("killed") < KILLS and len(outcomes) < 2 * KILLS:
        if not outcomes:  # the first kill lands the moment a checkpoint folder appears, before its files are written
            new_checkpoints, delay = 1, 0.0
        elif rng.random() < 0.25:  # during start-up: imports done, data, model, trainer, checkpoint loading
            new_checkpoints, delay = 0, rng.uniform(0, startup)
        else:  # during training: within a step of a checkpoint folder appearing (its save, rotation, the next step)
            new_checkpoints, delay = rng.choice((1, 2)), rng.uniform(0, max(step, 0.1))
        outcomes.append(_kill_once(ctx, out, new_checkpoints, delay))
        incomplete_seen |= {p.name for p, _ in find_checkpoints(out)[1]} if out.exists() else set()
    assert outcomes.count("killed") >= KILLS, (seed, outcomes)
    assert incomplete_seen, f"no kill hit a checkpoint write (seed {seed})"

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "genqa.sft", *_argv(out)], env=env, capture_output=True,
                            text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]

    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == MAX_STEPS and (out / FINISHED_FILE).is_file()
    got, want = _losses(out), _losses(reference)
    assert list(got) == list(range(1, MAX_STEPS + 1)) == list(want)
    assert got == pytest.approx(want, rel=1e-4), (seed, got, want)
    ours, theirs = load_file(out / "adapter_model.safetensors"), load_file(reference / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    worst = max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], rtol=1e-5, atol=1e-6, msg=f"{k} (seed {seed})")
    print(f"[kill test] seed {seed} (start-up {startup:.1f} s, {step:.2f} s/step): {outcomes.count('killed')} "
          f"kills, incomplete checkpoints left by kills: {sorted(incomplete_seen)}; max |adapter diff| vs "
          f"uninterrupted: {worst:.2e}")

    proc = ctx.Process(target=_run_sft, args=(_argv(out),))  # the same command once more: nothing changes
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    proc.start()
    proc.join()
    assert proc.exitcode == 0
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_length_grouped_order_depends_only_on_seed_and_epoch():
    """The sampler behind genqa's default `group_by_length` permutes from (seed, epoch), not the global RNG that a
    resume restores to the checkpoint's state."""
    import torch

    from genqa.backbones.sampling import ResumableLengthGroupedSampler

    lengths = [5, 40, 12, 33, 7, 21, 9, 18, 27, 3, 14, 30]
    first = ResumableLengthGroupedSampler(2, lengths, seed=7)
    order = list(first)
    torch.manual_seed(123)  # a resumed run's global RNG is somewhere else
    again = ResumableLengthGroupedSampler(2, lengths, seed=7)
    assert list(again) == order and sorted(order) == list(range(len(lengths)))
    again.set_epoch(1)
    assert list(again) != order  # a new epoch, a new order
