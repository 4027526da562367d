"""Recipe parsing: YAML file + command-line overrides → (QAArguments, SFTConfig, ModelConfig).

Parsing is TRL's own `TrlParser`; this module only adds what users keep tripping on: the recipe path as a
positional argument, and unknown or stale keys rejected *before* any model loads, with the file, the key and the
closest valid key named.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from trl import ModelConfig, SFTConfig, TrlParser

from genqa.config import QAArguments
from genqa.errors import GenqaError
from genqa.files import write_atomic

# Keys that older TRL / transformers / unsloth recipes use, and what they are called now.
STALE_KEYS: dict[str, str] = {
    "max_seq_length": "max_length",
    "torch_dtype": "dtype",
    "evaluation_strategy": "eval_strategy",
    "dataset_text_field_name": "dataset_text_field",
    "model_name": "model_name_or_path",
    "lora_rank": "lora_r",
    "r": "lora_r",
    "target_modules": "lora_target_modules",
    "modules_to_save": "lora_modules_to_save",
    "bnb_4bit_use_double_quant": "use_bnb_nested_quant",
    "no_cuda": "use_cpu",
    "warmup_ratio": "warmup_steps (a value below 1 is a fraction of the training steps)",
}

RECIPE_DATACLASSES = (QAArguments, SFTConfig, ModelConfig)


class RecipeError(GenqaError, ValueError):
    """A recipe (file or command line) that cannot be used; the message says where and what to do."""


def recipe_keys() -> set[str]:
    """All keys a recipe may set: the fields of QAArguments, SFTConfig and ModelConfig."""
    keys: set[str] = set()
    for cls in RECIPE_DATACLASSES:
        keys.update(f.name for f in dataclasses.fields(cls) if f.init)
    return keys


def _unknown_key_message(key: str, where: str, valid: set[str]) -> str:
    if key in STALE_KEYS:
        return (f"{where}: `{key}` is a stale key; it is called `{STALE_KEYS[key]}` now. Rename it and run again.")
    close = difflib.get_close_matches(key, sorted(valid), n=1, cutoff=0.6)
    hint = f" Did you mean `{close[0]}`?" if close else ""
    return (f"{where}: unknown recipe key `{key}`.{hint} Valid keys are the fields of genqa's QAArguments, TRL's "
            "SFTConfig and ModelConfig (`python -m genqa.sft --help` lists them).")


def _normalise_argv(argv: list[str]) -> list[str]:
    """Turn `RECIPE.yaml --k v` into `--config RECIPE.yaml --k v` (alignment-handbook style positional recipe)."""
    if argv and not argv[0].startswith("-") and argv[0].endswith((".yaml", ".yml")):
        return ["--config", argv[0], *argv[1:]]
    return argv


def load_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe YAML file and check every key against the recipe schema."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file {path} not found. Pass the path of a YAML recipe, e.g. recipes/tiny/mcq.yaml.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of key: value.")
    valid = recipe_keys() | {"env"}
    for key in data:
        if key not in valid:
            raise RecipeError(_unknown_key_message(str(key), str(path), valid))
    return data


def _check_cli_keys(argv: list[str]) -> None:
    valid = recipe_keys() | {"config", "help"}
    for tok in argv:
        if tok.startswith("--"):
            key = tok[2:].split("=", 1)[0].replace("-", "_")
            if key not in valid:
                raise RecipeError(_unknown_key_message(key, "command line", valid))


def parse_recipe(argv: list[str] | None = None) -> tuple[QAArguments, SFTConfig, ModelConfig, str | None]:
    """Parse a recipe and its command-line overrides with TRL's `TrlParser`.

    Returns the three argument dataclasses and the recipe path (None when everything came from the command line).
    """
    argv = _normalise_argv(list(sys.argv[1:] if argv is None else argv))
    recipe_path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise RecipeError("--config needs the path of a YAML recipe.")
        recipe_path = argv[i + 1]
        load_recipe_file(recipe_path)
    _check_cli_keys(argv)
    parser = TrlParser(RECIPE_DATACLASSES)
    where = recipe_path or "command line"
    try:
        qa, sft, model = parser.parse_args_and_config(args=argv)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"{where}: {err}") from err
    return qa, sft, model, recipe_path


def resolved_recipe(qa: QAArguments, sft: SFTConfig, model: ModelConfig) -> dict[str, Any]:
    """The fully resolved recipe as one flat, YAML-serialisable mapping (every key of the three dataclasses)."""
    out: dict[str, Any] = {}
    for obj in (qa, model):
        out.update(dataclasses.asdict(obj))
    out.update(sft.to_dict())
    # Deprecated aliases: gradient_checkpointing* mirror activation_checkpointing*; pad_token warns when set at all.
    deprecated = {"gradient_checkpointing", "gradient_checkpointing_kwargs"} | ({"pad_token"} if sft.pad_token is None
                                                                               else set())
    return {k: _plain(v) for k, v in out.items() if k in recipe_keys() and k not in deprecated}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def non_default_items(obj: Any) -> dict[str, Any]:
    """Fields of a dataclass instance whose value differs from the field's default."""
    out = {}
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default  # type: ignore[misc]
        value = _plain(getattr(obj, f.name))
        if value != _plain(default):
            out[f.name] = value
    return out


def dump_recipe(data: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a recipe mapping as YAML, atomically."""
    write_atomic(path, yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
