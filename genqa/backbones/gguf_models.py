"""GGUF files as models: a `.gguf` on the hub fetched once, and any `.gguf` read by transformers' own GGUF loader and
converted once to a safetensors folder in the cache (`$GENQA_CACHE/gguf`), so training and prediction load it as a
plain model. `load_gguf` is the one way genqa reads a GGUF file (`pkg:` models, `.gguf` paths, and the check of
every `genqa export`).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from genqa.files import cache_dir
from genqa.recipe import RecipeError

logger = logging.getLogger(__name__)


def _missing_local_gguf(name: str) -> bool:
    """A `.gguf` name that is neither a local file nor `owner/repo/FILE.gguf` on the hub (a path that starts like a
    local one, sits in an existing local folder, or has no repo part)."""
    return (not Path(name).is_file() and (name.startswith((".", "/", "~")) or Path(name).parent.is_dir()
                                          or name.count("/") < 2))


def hub_gguf(name: str) -> Path:
    """`owner/repo/FILE.gguf` (what `gguf_file` makes of a hub repo): the file, downloaded once into the hub cache."""
    if _missing_local_gguf(name):
        raise RecipeError(f"model_name_or_path: {name}: no such .gguf file (working directory: {Path.cwd()}).")
    from huggingface_hub import hf_hub_download

    parts = name.split("/")
    repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as err:  # noqa: BLE001 - offline, missing repo or file, auth: the hub client raises many types
        raise RecipeError(f"model_name_or_path: could not fetch {filename} from the hub repo {repo} "
                          f"({type(err).__name__}: {str(err)[:200]}). Offline, download the file and point "
                          "`model_name_or_path` at it (or at its folder, with `gguf_file`).") from err


def convert_gguf(path: Path) -> str:
    """A safetensors folder holding the causal LM of GGUF file `path`, dequantized to float32 by transformers;
    converted once into the cache folder (`$GENQA_CACHE/gguf`), reused while the file is unchanged.

    transformers loads a GGUF file but refuses to save it (the model counts as quantized), so the dequantized weights
    are copied into a plain model of the same config, saved with the tokenizer (and its chat template) to a temp
    folder and renamed into place when complete. Note: dequantized weights are not the original full-precision
    model (a Q4_1 file has lost precision for good).
    """
    import hashlib
    import json
    import os
    import shutil
    import tempfile

    from transformers import AutoModelForCausalLM

    stat = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    target = cache_dir() / "gguf" / f"{path.stem}-{digest}"
    if (target / "config.json").is_file() and (target / "GENQA_GGUF.json").is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.warning("converting %s to a safetensors folder in %s (once; about a minute)", path, target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}-", dir=target.parent))
    try:
        loaded, tokenizer = load_gguf(path)
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict(), strict=True)
        model.generation_config = loaded.generation_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "GENQA_GGUF.json").write_text(json.dumps({
            "source": str(path.resolve()), "bytes": stat.st_size,
            "note": "weights dequantized from GGUF to float32; not the original full-precision model"}, indent=2))
        try:
            os.replace(tmp, target)
        except OSError:  # converted concurrently by another process: keep theirs
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def load_gguf(path: Path):
    """(causal LM dequantized to float32, tokenizer) of GGUF file `path`, read by transformers' own GGUF loader: the
    one way genqa reads a GGUF (`pkg:` models, `.gguf` paths, and the check of every `genqa export`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model, tokenizer
