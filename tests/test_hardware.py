"""genqa.hardware: the precision decision from a (mocked) probe, the warning, the probe cache, `genqa env`.

No timing is asserted: the probe's measurement is replaced by fixed numbers wherever a decision is tested.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genqa import hardware
from genqa.hardware import MIN_BF16_SPEEDUP, decide_precision


def test_cpu_without_a_recipe_choice_follows_the_measurement():
    fast = decide_precision(None, "cpu", bf16_speedup=3.9)
    slow = decide_precision(None, "cpu", bf16_speedup=0.02)
    assert fast.bf16 and "3.90x" in fast.reason and fast.warning is None
    assert not slow.bf16 and "0.02x" in slow.reason and slow.warning is None
    assert not decide_precision(None, "cpu", bf16_speedup=MIN_BF16_SPEEDUP * 0.99).bf16
    assert not decide_precision(None, "cpu", bf16_speedup=None).bf16  # unmeasured: the safe fp32


def test_an_explicit_bf16_on_a_slow_cpu_is_kept_and_warned_about_with_the_ratio():
    choice = decide_precision(True, "cpu", bf16_speedup=0.02)
    assert choice.bf16  # the user asked: kept
    assert "0.02x" in choice.warning and "50x slower" in choice.warning and "`bf16: false`" in choice.warning
    assert decide_precision(True, "cpu", bf16_speedup=4.0).warning is None
    off = decide_precision(False, "cpu", bf16_speedup=4.0)
    assert not off.bf16 and off.warning is None


def test_gpu_uses_bf16_where_supported_unless_the_recipe_says_otherwise():
    assert decide_precision(None, "cuda", gpu_bf16=True).bf16
    assert not decide_precision(None, "cuda", gpu_bf16=False).bf16
    assert not decide_precision(False, "cuda", gpu_bf16=True).bf16
    assert "does not support" in decide_precision(True, "cuda", gpu_bf16=False).warning


@pytest.fixture
def fake_probe(monkeypatch, tmp_path):
    """The CPU measured as (fp32 seconds, bf16 seconds) per matmul; the cache in a temporary folder."""
    monkeypatch.setenv("GENQA_CACHE", str(tmp_path))
    calls = []

    def set_times(t32: float, t16: float):
        monkeypatch.setattr(hardware, "_best_seconds", lambda *a, **k: calls.append(1) or (t32, t16))
        return calls

    return set_times


def test_probe_is_cached_per_machine_and_refreshable(fake_probe, tmp_path):
    calls = fake_probe(0.004, 0.001)
    first = hardware.probe()
    assert first["bf16_speedup"] == 4.0 and not first["cached"] and len(calls) == 1
    again = hardware.probe()
    assert again["cached"] and again["bf16_speedup"] == 4.0 and len(calls) == 1
    files = list((tmp_path / "hardware").glob("cpu-*.json"))
    assert [f.name for f in files] == [f"cpu-{hardware.probe_key()}.json"]
    assert not hardware.probe(refresh=True)["cached"] and len(calls) == 2


def _sft_run_precision(argv: list[str]):
    from genqa.recipe import parse_recipe
    from genqa.sft import apply_speed_defaults, explicit_keys

    _, sft, _, recipe_path = parse_recipe(argv)
    apply_speed_defaults(sft, explicit_keys(argv, recipe_path))
    return sft


def _recipe_without_bf16(tmp_path: Path) -> str:
    text = Path("recipes/tiny/mcq.yaml").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.startswith("bf16:")]
    path = tmp_path / "no_bf16.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_a_recipe_without_bf16_trains_in_the_faster_precision(fake_probe, tmp_path, capsys):
    recipe = _recipe_without_bf16(tmp_path)
    fake_probe(0.001, 0.05)  # bf16 50x slower (an AVX2-only CPU)
    sft = _sft_run_precision([recipe, "--use_cpu", "true"])
    assert sft.bf16 is False and sft.mixed_precision == "no"  # TRL alone would have said bf16: true
    assert "precision: fp32" in capsys.readouterr().out
    fake_probe(0.004, 0.001)
    hardware.probe(refresh=True)
    sft = _sft_run_precision([recipe, "--use_cpu", "true"])
    assert sft.bf16 is True and sft.mixed_precision == "bf16"


def test_asking_for_bf16_on_a_slow_cpu_warns_with_the_measured_ratio(fake_probe, tmp_path, capsys):
    fake_probe(0.001, 0.05)
    sft = _sft_run_precision([_recipe_without_bf16(tmp_path), "--use_cpu", "true", "--bf16", "true"])
    assert sft.bf16 is True
    err = capsys.readouterr().err
    assert "warning" in err and "0.02x" in err
    sft = _sft_run_precision(["recipes/tiny/mcq.yaml", "--use_cpu", "true"])  # the file says bf16: false
    assert sft.bf16 is False and "warning" not in capsys.readouterr().err


def test_threads_are_fitted_to_the_cores_the_process_may_use(monkeypatch):
    import torch

    old = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(hardware, "available_cores", lambda: 1)
    try:
        torch.set_num_threads(2)
        assert "2 -> 1" in hardware.fit_threads() and torch.get_num_threads() == 1
        assert "1 cores available" in hardware.fit_threads()
    finally:
        torch.set_num_threads(old)


def test_env_report_names_versions_flags_and_the_choice(fake_probe, capsys):
    fake_probe(0.001, 0.05)
    assert hardware.main(["--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"torch", "transformers", "trl", "peft", "accelerate", "datasets"} <= set(info["versions"])
    assert set(hardware.FLAGS_THAT_MATTER) == set(info["cpu"]["flags"])
    assert info["precision"]["bf16"] is False and info["cpu_probe"]["bf16_speedup"] == 0.02
    assert hardware.main([]) == 0
    text = capsys.readouterr().out
    assert "avx512_bf16" in text and "precision genqa uses" in text and "fp32" in text


def test_batches_are_grouped_by_length_unless_the_recipe_chooses(fake_probe, tmp_path):
    fake_probe(0.004, 0.001)
    assert _sft_run_precision(["recipes/tiny/mcq.yaml"]).train_sampling_strategy == "group_by_length"
    chosen = _sft_run_precision(["recipes/tiny/mcq.yaml", "--train_sampling_strategy", "random"])
    assert chosen.train_sampling_strategy == "random"
    assert _sft_run_precision(["recipes/tiny/mcq.yaml", "--padding_free", "true"]).train_sampling_strategy == "random"


def test_generate_autocast_auto_follows_the_measurement_and_bf16_is_warned_about(fake_probe, capsys):
    fake_probe(0.001, 0.05)
    assert hardware.resolve_autocast("auto") == "none"
    assert hardware.resolve_autocast("bf16") == "bf16"  # asked for: kept
    err = capsys.readouterr().err
    assert "autocast: none" in err and "warning" in err and "--autocast auto" in err
    assert hardware.resolve_autocast("none") == "none"
    fake_probe(0.004, 0.001)
    hardware.probe(refresh=True)
    assert hardware.resolve_autocast("auto") == "bf16"


def test_a_resumed_run_keeps_the_precision_and_sampler_it_started_with(fake_probe, tmp_path):
    import yaml

    from genqa.run_dir import RECIPE_FILE

    fake_probe(0.004, 0.001)  # bf16 faster now
    out = tmp_path / "run"
    out.mkdir()
    (out / RECIPE_FILE).write_text(yaml.safe_dump({"bf16": False, "train_sampling_strategy": "random"}))
    argv = [_recipe_without_bf16(tmp_path), "--output_dir", str(out), "--use_cpu", "true"]
    sft = _sft_run_precision(argv)
    assert sft.bf16 is False and sft.train_sampling_strategy == "random"
    sft = _sft_run_precision([*argv, "--bf16", "true"])
    assert sft.bf16 is True
