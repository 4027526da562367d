"""Shared fixtures: offline mode, the tiny Llama built once per session, the repo root, the two-process DDP run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models are overhead-bound: one intra-op thread is several times faster than two on this 2-core machine."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session", autouse=True)
def _repo_cwd():
    """Recipes name paths relative to the repo root: run every test from there."""
    old = os.getcwd()
    os.chdir(ROOT)
    yield
    os.chdir(old)


@pytest.fixture(scope="session")
def tiny_llama_path() -> str:
    """Folder of the tiny offline Llama (built once, cached under $GENQA_CACHE)."""
    from genqa.backbones.loading import resolve_model_path

    return resolve_model_path("tiny:llama")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_llama_path):
    """The tiny Llama's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_llama_path)


@pytest.fixture(scope="session")
def ddp_adapter(tmp_path_factory) -> dict:
    """The tiny LoRA recipe under two-process CPU DDP (tests/launching.py): the reference for the sharded runs."""
    from launching import launch, log_history
    from safetensors.torch import load_file

    out = tmp_path_factory.mktemp("ddp") / "run"
    result = launch("ddp.yaml", out)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"weights": load_file(out / "adapter_model.safetensors"), "log": log_history(out)}
