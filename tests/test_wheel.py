"""A wheel built from the tracked files installs and works from outside the repository: templates and sample data
come from inside the installed package (importlib.resources), every subcommand runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

pytestmark = pytest.mark.slow


def _tracked_copy(dest: Path) -> Path:
    """The repository's tracked (and not ignored) files, as a clean clone would have them."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.splitlines()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _tracked_copy(tmp / "src")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    wheels = list((tmp / "dist").glob("genqa-*.whl"))
    if built.returncode != 0 or not wheels:
        pytest.skip(f"the wheel cannot be built offline here: {built.stderr[-500:]}")
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # the test environment's packages, by path only: its .pth files (genqa's editable finder) are not processed
    (site / "test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    "--force-reinstall", str(wheels[0])], check=True, capture_output=True, timeout=300)
    return env_dir


def _run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    proc = subprocess.run([str(venv / "bin" / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_wheel_install_runs_every_command_outside_the_repo(venv, tmp_path):
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = _run(venv, work, "python", "-c", "import genqa, genqa.resources as r; print(genqa.__file__); "
                 "print(r.resource_dir('templates')); print(r.resource_dir('sample_data'))").stdout.split()
    assert all(p.startswith(str(venv)) for p in where), where  # the installed package, its own resources
    data = Path(where[2])
    assert (Path(where[1]) / "llama2.jinja").is_file() and (data / "zh_mcq.xlsx").is_file()
    shipped = _run(venv, work, "python", "-c", "import genqa.resources as r; print(r.resource_dir('recipes')); "
                   "print(r.resource_dir('accelerate_configs'))").stdout.split()
    assert all(p.startswith(str(venv)) for p in shipped), shipped  # recipes and launch configs ship in the wheel
    assert (Path(shipped[0]) / "tiny" / "mcq.yaml").is_file() and (Path(shipped[0]) / "cpu" / "squad_v1.yaml").is_file()
    assert (Path(shipped[1]) / "ddp.yaml").is_file() and (Path(shipped[1]) / "zero3.json").is_file()
    metadata = next(venv.glob("lib/python*/site-packages/genqa-*.dist-info/METADATA")).read_text(encoding="utf-8")
    assert len(metadata.split("\n\n", 1)[1].splitlines()) < 20  # a short description, not the whole README
    recipe = yaml.safe_load((ROOT / "recipes/tiny/mcq.yaml").read_text(encoding="utf-8"))
    recipe.update(dataset_path=str(data / "zh_mcq.xlsx"), output_dir="run", max_steps=2, save_steps=2)
    (work / "mcq.yaml").write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")

    assert "usage: genqa" in _run(venv, work, "genqa", "--help").stdout
    _run(venv, work, "genqa", "train", "mcq.yaml")
    assert (work / "run" / "adapter_model.safetensors").is_file() and (work / "run" / "genqa_model_card.md").is_file()
    assert "[[" in _run(venv, work, "genqa", "preview", "mcq.yaml", "-n", "1").stdout
    _run(venv, work, "genqa", "predict", "--base", "tiny:llama", "--adapter", "run", "--data",
         str(data / "zh_mcq_test.xlsx"), "--id_column", "題號", "--out", "submission.csv")
    assert (work / "submission.csv").read_text(encoding="utf-8").startswith("ID,Answer")
    assert "torch " in _run(venv, work, "genqa", "env").stdout
