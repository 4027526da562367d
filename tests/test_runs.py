"""Run folders and prediction files under reruns, interrupted saves and a second writer.

Resume uses the newest complete checkpoint; a rerun of a finished run changes nothing; predictions are resumed only
onto predictions the same weights, tokenizer, template and prompt keys made; one process writes an output at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from genqa.generate import main as generate_main
from genqa.locks import LockError, OutputLock, output_lock
from genqa.run_dir import FINISHED_FILE, LOCK_FILE, checkpoint_problem, find_checkpoints
from genqa.sft import main as sft_main
from genqa.submission import PredictionStore, SubmissionError

RECIPE = "recipes/tiny/mcq.yaml"  # 9 train rows, batch 4: 3 steps per epoch


def _train(out: Path, *extra: str) -> int:
    return sft_main([RECIPE, "--output_dir", str(out), "--logging_steps", "1", *extra])


def _state(run: Path) -> dict:
    return json.loads((run / "trainer_state.json").read_text())


def _snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under `folder`: content and mtime."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ckpt_run(tmp_path_factory) -> Path:
    """4 steps (not a multiple of the 3 steps per epoch), checkpoints at 2 and 4: a finished run."""
    out = tmp_path_factory.mktemp("runs") / "ckpt"
    assert _train(out, "--max_steps", "4", "--save_steps", "2", "--save_total_limit", "3") == 0
    return out


# ---- 1. resume from the newest complete checkpoint ----------------------------------------------------------------

def test_checkpoint_problems_are_named(ckpt_run, tmp_path):
    good = ckpt_run / "checkpoint-4"
    assert checkpoint_problem(good) is None

    def broken(name: str, damage) -> str | None:
        folder = tmp_path / name
        shutil.copytree(good, folder)
        damage(folder)
        return checkpoint_problem(folder)

    assert "no trainer_state.json" in broken("a", lambda f: (f / "trainer_state.json").unlink())
    state = (good / "trainer_state.json").read_text()
    assert "cut short" in broken("b", lambda f: (f / "trainer_state.json").write_text(state[: len(state) // 2]))
    weights = (good / "adapter_model.safetensors").read_bytes()
    problem = broken("c", lambda f: (f / "adapter_model.safetensors").write_bytes(weights[:-100]))
    assert "adapter_model.safetensors is unreadable" in problem
    assert "no model weights" in broken("d", lambda f: (f / "adapter_model.safetensors").unlink())
    assert "no optimizer state" in broken("e", lambda f: (f / "optimizer.pt").unlink())
    (tmp_path / "empty").mkdir()
    assert "no trainer_state.json" in checkpoint_problem(tmp_path / "empty")


def test_resume_skips_incomplete_checkpoints_and_sets_them_aside(ckpt_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(ckpt_run, out)
    (out / FINISHED_FILE).unlink()  # a run killed before its end
    (out / "checkpoint-99").mkdir()  # the reproduction
    shutil.copytree(out / "checkpoint-4", out / "checkpoint-6")
    state = (out / "checkpoint-6" / "trainer_state.json").read_text()
    (out / "checkpoint-6" / "trainer_state.json").write_text(state[:200])  # a save cut short
    newest, incomplete = find_checkpoints(out)
    assert newest == out / "checkpoint-4"
    assert [p.name for p, _ in incomplete] == ["checkpoint-99", "checkpoint-6"]
    capsys.readouterr()
    assert _train(out, "--max_steps", "7", "--save_steps", "2", "--save_total_limit", "3") == 0
    log = capsys.readouterr().out
    assert "skipping" in log and "checkpoint-99 (no trainer_state.json" in log and "checkpoint-6 (trainer_state" in log
    assert f"resuming from the last checkpoint in {out}: {out / 'checkpoint-4'}" in log
    assert (out / "incomplete-checkpoint-99").is_dir() and (out / "incomplete-checkpoint-6").is_dir()
    assert not (out / "checkpoint-99").exists()
    state = _state(out)
    assert state["global_step"] == 7
    steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps == list(range(1, 8))  # steps 5-7 trained once each after 1-4
    # the run's summaries cover all 7 steps, not only the 3 of the last process
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    results = json.loads((out / "train_results.json").read_text())
    assert results["train_loss"] == pytest.approx(sum(losses) / 7)
    tokens = [h["num_tokens"] for h in state["log_history"] if "num_tokens" in h]
    assert tokens == sorted(tokens) and tokens[4] > tokens[3]  # counted on from the checkpoint, not from 0


def test_explicit_incomplete_checkpoint_is_refused(ckpt_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(ckpt_run, out)
    (out / "checkpoint-4" / "trainer_state.json").unlink()
    assert _train(out, "--max_steps", "6", "--resume_from_checkpoint", str(out / "checkpoint-4")) == 2
    assert "cannot be resumed from (no trainer_state.json" in capsys.readouterr().err


# ---- 2. a finished run is reported and left unchanged --------------------------------------------------------------

def test_rerun_of_a_finished_run_changes_nothing(ckpt_run, capsys):
    before = _snapshot(ckpt_run)
    assert _state(ckpt_run)["global_step"] == 4
    capsys.readouterr()
    for _ in range(2):
        assert _train(ckpt_run, "--max_steps", "4", "--save_steps", "2", "--save_total_limit", "3") == 0
        assert "holds a finished run (step 4" in capsys.readouterr().out
    assert _train(ckpt_run, "--max_steps", "3", "--save_steps", "2", "--save_total_limit", "3") == 0  # fewer steps
    assert _snapshot(ckpt_run) == before


def test_finished_run_with_another_recipe_is_refused(ckpt_run, capsys):
    assert _train(ckpt_run, "--max_steps", "4", "--learning_rate", "0.5") == 2
    assert "different recipe (learning_rate" in capsys.readouterr().err


def test_kill_before_the_final_files_trains_no_extra_step(ckpt_run, tmp_path, capsys):
    """The last checkpoint reached max_steps but the run was killed before it finished: the final files are written
    from that checkpoint, without Trainer's extra step (4 is not a multiple of the 3 steps per epoch)."""
    out = tmp_path / "run"
    shutil.copytree(ckpt_run, out)
    (out / FINISHED_FILE).unlink()
    (out / "adapter_model.safetensors").unlink()
    capsys.readouterr()
    assert _train(out, "--max_steps", "4", "--save_steps", "2", "--save_total_limit", "3") == 0
    assert "already reached the end of training" in capsys.readouterr().out
    assert _state(out)["global_step"] == 4
    assert (out / FINISHED_FILE).is_file()
    losses = [h["loss"] for h in _state(out)["log_history"] if "loss" in h]
    assert json.loads((out / "train_results.json").read_text())["train_loss"] == pytest.approx(sum(losses) / 4)
    assert "mean over the run" in (out / "genqa_model_card.md").read_text()
    final, ckpt = load_file(out / "adapter_model.safetensors"), load_file(ckpt_run / "checkpoint-4" /
                                                                            "adapter_model.safetensors")
    assert final.keys() == ckpt.keys() and all((final[k] == ckpt[k]).all() for k in final)


def test_raising_max_steps_continues_a_finished_run(ckpt_run, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(ckpt_run, out)
    capsys.readouterr()
    assert _train(out, "--max_steps", "5", "--save_steps", "2", "--save_total_limit", "3") == 0
    assert "resuming from the last checkpoint" in capsys.readouterr().out
    state = _state(out)
    assert state["global_step"] == 5 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4, 5]
    assert json.loads((out / FINISHED_FILE).read_text())["global_step"] == 5


def test_finished_run_without_checkpoints_cannot_be_trained_further(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out, "--max_steps", "2", "--save_strategy", "no") == 0
    assert _train(out, "--max_steps", "2", "--save_strategy", "no") == 0
    assert "holds a finished run (step 2" in capsys.readouterr().out
    assert _train(out, "--max_steps", "3", "--save_strategy", "no") == 2
    assert "a run finished at step 2 and no checkpoint to resume from" in capsys.readouterr().err


# ---- 4. one writer per output ---------------------------------------------------------------------------------------

def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_refuses_a_second_holder_and_takes_over_stale_locks(tmp_path, capsys):
    path = tmp_path / "x.lock"
    with output_lock(path, "output x", main_only=False):
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(LockError, match=rf"output x is being written by another genqa process \(pid {os.getpid()}"):
            OutputLock(path, "output x").acquire()
    assert not path.exists()  # released

    path.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))
    with output_lock(path, "output x", main_only=False) as lock:
        assert json.loads(path.read_text())["token"] == lock.token
    assert "taking over a stale lock" in capsys.readouterr().out

    path.write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere.example"}))
    with pytest.raises(LockError, match="another host"):
        OutputLock(path, "output x").acquire()
    path.write_text("")  # a process killed between creating the lock and writing it
    with pytest.raises(LockError, match="creating it right now"):
        OutputLock(path, "output x").acquire()
    old = time.time() - 60
    os.utime(path, (old, old))
    with output_lock(path, "output x", main_only=False):
        pass


def test_second_training_into_one_output_dir_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with output_lock(out / LOCK_FILE, "another training", main_only=False):
        assert _train(out, "--max_steps", "2", "--save_strategy", "no") == 2
    err = capsys.readouterr().err
    assert f"genqa.sft: error: output_dir {out} is being written by another genqa process (pid {os.getpid()}" in err
    assert not (out / "adapter_model.safetensors").exists()
    (out / LOCK_FILE).write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname()}))  # a killed run
    assert _train(out, "--max_steps", "2", "--save_strategy", "no") == 0
    assert not (out / LOCK_FILE).exists()


def test_two_trainings_at_once_one_is_refused(tmp_path):
    """Two real processes started together on one output_dir: exactly one trains, the other says why it stopped."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "genqa.sft", RECIPE, "--output_dir", str(out), "--max_steps", "3",
           "--save_strategy", "no"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(rc for rc, _ in results)
    assert codes in ([0, 2], [0, 0]), results
    if codes == [0, 0]:  # the second started after the first had finished: it found a finished run
        pytest.skip("the two processes did not overlap on this machine")
    assert any("is being written by another genqa process" in err for rc, err in results if rc == 2)
    assert _state(out)["global_step"] == 3


# ---- 3. the predictions fingerprint ---------------------------------------------------------------------------------

def _generate(run: Path, out: Path, *extra: str) -> int:
    return generate_main(["--base", "tiny:llama", "--adapter", str(run), "--data", "data/tiny/zh_mcq.xlsx",
                          "--no_progress", "--out", str(out), *extra])


def test_predictions_of_a_retrained_adapter_are_not_mixed(ckpt_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(ckpt_run, run)
    out = tmp_path / "s.csv"
    assert _generate(run, out, "--limit", "4") == 0
    # retrained in place: same path, same size, other weights
    shutil.copy(ckpt_run / "checkpoint-2" / "adapter_model.safetensors", run / "adapter_model.safetensors")
    capsys.readouterr()
    assert _generate(run, out) == 2
    assert "other settings (changed: adapter_weights)" in capsys.readouterr().err


def test_training_only_keys_do_not_block_a_resume(ckpt_run, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert _generate(ckpt_run, out, "--limit", "4") == 0
    capsys.readouterr()
    assert _generate(ckpt_run, out, "--learning_rate", "1e-4", "--lora_r", "4", "--max_steps", "9") == 0
    assert "resuming: 4 of" in capsys.readouterr().out
    assert _generate(ckpt_run, out, "--template", "alpaca") == 2
    assert "changed: template, template_text)" in capsys.readouterr().err
    assert _generate(ckpt_run, out, "--instruction", "Answer.") == 2
    assert "changed: instruction)" in capsys.readouterr().err


def test_an_edited_template_file_is_another_prompt(ckpt_run, tmp_path, capsys):
    template = tmp_path / "mine.jinja"
    template.write_text(Path("templates/llama2.jinja").read_text(encoding="utf-8"), encoding="utf-8")
    out = tmp_path / "s.csv"
    assert _generate(ckpt_run, out, "--limit", "2", "--template", str(template)) == 0
    template.write_text(template.read_text(encoding="utf-8").replace("[INST]", "[INSTRUCTION]"), encoding="utf-8")
    from genqa.data.templates import _read

    _read.cache_clear()  # template files are cached per process; a new `python -m genqa.generate` reads it anew
    capsys.readouterr()
    assert _generate(ckpt_run, out, "--template", str(template)) == 2  # same --template value, other text
    assert "changed: template_text)" in capsys.readouterr().err


def test_second_generate_on_one_out_is_refused(ckpt_run, tmp_path, capsys):
    out = tmp_path / "s.csv"
    with output_lock(tmp_path / "s.csv.lock", "another generate", main_only=False):
        assert _generate(ckpt_run, out) == 2
    assert f"--out {out} is being written by another genqa process" in capsys.readouterr().err
    assert not (tmp_path / "s.csv.predictions.jsonl").exists()


# ---- predictions.jsonl lines genqa cannot use -----------------------------------------------------------------------

@pytest.mark.parametrize(("line", "message"), [
    ('{"answer": "1"}', 'line 2 has no "id"'),
    ('["a", "1"]', "line 2 is not a JSON object"),
    ('"just text"', "line 2 is not a JSON object"),
    ("not json", "line 2 is not JSON"),
])
def test_prediction_store_names_a_bad_line(tmp_path, line, message):
    path = tmp_path / "p.jsonl"
    path.write_text(f'{{"id": "a", "answer": "1"}}\n{line}\n{{"id": "b", "answer": "2"}}\n', encoding="utf-8")
    with pytest.raises(SubmissionError, match=f"{path}: {message}"):
        PredictionStore(path)


def test_predictions_without_a_fingerprint_are_not_resumed_onto(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a", "answer": "1"}\n', encoding="utf-8")
    with pytest.raises(SubmissionError, match="no record of what made them"):
        PredictionStore(path, {"base_weights": "x"})
