"""Recipe parsing: YAML file + command-line overrides → (QAArguments, SFTConfig, ModelConfig).

Parsing is TRL's own `TrlParser`; this module only adds what users keep tripping on: the recipe path as a
positional argument, unknown or stale keys rejected *before* any model loads (with the file, the key and the
closest valid key named), and every value checked against its dataclass field. `TrlParser` hands YAML values to the
dataclasses as they are (argparse converts only strings), so `max_steps: [1, 2]` or `lora_r: 8.5` would pass
parsing and `--dry_run` and fail after the model has loaded; `check_value_types` compares each YAML value with the
field's type annotation (and `choices`), and `check_ranges` refuses values no run can use (a batch size of 0, a
negative learning rate, a LoRA dropout of 1.5). Command-line errors of argparse become a `RecipeError` too.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import os
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Any

import yaml
from trl import ModelConfig, SFTConfig, TrlParser

from genqa.config import QAArguments, env_problem, out_of_range
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


#: how many values a recipe may expand to once YAML aliases are followed (a real recipe has a few hundred)
MAX_YAML_VALUES = 100_000


class _RecipeLoader(yaml.SafeLoader):
    """PyYAML's safe loader that refuses a key written twice in one mapping (the last one would silently win)."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if isinstance(key, typing.Hashable) and key in seen:
                raise RecipeError(f"{self.name}: key `{key}` is written twice (lines {seen[key]} and {line}); only "
                                  "one can hold. Delete one of them.")
            if isinstance(key, typing.Hashable):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, sizes: dict[int, int]) -> int:
    """How many values `node` stands for once every alias is expanded (memoised: a billion laughs costs nothing)."""
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 1  # a node that contains itself (a recursive alias) counts once
    children = []
    if isinstance(node, yaml.MappingNode):
        children = [n for pair in node.value for n in pair]
    elif isinstance(node, yaml.SequenceNode):
        children = node.value
    sizes[id(node)] = min(1 + sum(_expanded_size(c, sizes) for c in children), MAX_YAML_VALUES + 1)
    return sizes[id(node)]


def read_yaml(path: Path) -> Any:
    """A YAML file genqa reads (a recipe, a run's saved recipe), refused with a message naming the file when it is
    not UTF-8, not YAML, nested too deeply, writes a key twice, or expands through aliases past `MAX_YAML_VALUES`."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not UTF-8 text (byte {err.start}: {raw[err.start:err.start + 1]!r}); save the "
                          "recipe as UTF-8.") from None
    loader = _RecipeLoader(text)
    loader.name = str(path)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node, {}) > MAX_YAML_VALUES:
            raise RecipeError(f"{path}: expands to more than {MAX_YAML_VALUES:,} values through YAML aliases "
                              "(`*name`); a recipe that large is a mistake or an attack. Write the values out.")
        return (loader.construct_document(node) if node is not None else None) or {}
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: not valid YAML: {err}") from err
    except RecursionError:
        raise RecipeError(f"{path}: values nested too deeply to read; a recipe is a flat mapping of key: value.") \
            from None
    finally:
        loader.dispose()


def check_env(env: Any, where: str) -> None:
    """A recipe's `env:` (TRL sets each entry as a process environment variable), checked by `env_problem`."""
    problem = env_problem(env)
    if problem:
        raise RecipeError(f"{where}: {problem}")


def load_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe YAML file and check every key against the recipe schema."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"Recipe file {path} not found. Pass the path of a YAML recipe, e.g. recipes/tiny/mcq.yaml.")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of key: value.")
    valid = recipe_keys() | {"env"}
    for key in data:
        if key not in valid:
            raise RecipeError(_unknown_key_message(str(key), str(path), valid))
    check_env(data.get("env"), str(path))
    check_value_types(data, str(path))
    return data


_BOOL_STRINGS = {"true", "false", "yes", "no", "1", "0", "y", "n", "t", "f"}


@functools.lru_cache(maxsize=1)
def _fields() -> dict[str, tuple[Any, dataclasses.Field]]:
    """Every recipe key: (its resolved type annotation, its dataclass field)."""
    out: dict[str, tuple[Any, dataclasses.Field]] = {}
    for cls in RECIPE_DATACLASSES:
        hints = typing.get_type_hints(cls)
        out.update({f.name: (hints[f.name], f) for f in dataclasses.fields(cls) if f.init})
    return out


def _number_ok(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, str):  # argparse converts strings (`learning_rate: 1e-4` is a string in YAML 1.1)
        try:
            kind(value)
        except ValueError:
            return False
        return True
    return isinstance(value, int) if kind is int else isinstance(value, int | float)


def _type_ok(value: Any, tp: Any) -> bool:
    """Whether a YAML value can stand for a field annotated `tp` (a scalar is accepted for a list, as argparse does)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        return any(_type_ok(value, a) for a in (enums + [type(None)] if enums and str in args else args))
    if origin is typing.Literal:
        return value in args
    if origin is list:
        return (isinstance(value, list) and all(_type_ok(v, args[0]) for v in value)) or _type_ok(value, args[0])
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool) or (isinstance(value, str) and value.lower() in _BOOL_STRINGS)
    if tp in (int, float):
        return _number_ok(value, tp)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return isinstance(value, tp) or value in {m.value for m in tp}
    return True  # other classes (e.g. accelerate's ParallelismConfig): their dataclass checks them


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        return " or ".join(_describe(a) for a in (enums + [type(None)] if enums and str in args else args))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ')}s"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in tp)
    names = {int: "a whole number", float: "a number", str: "a string", bool: "true/false", dict: "a mapping",
             type(None): "null"}
    return names.get(tp) or names.get(origin) or getattr(tp, "__name__", str(tp))


def check_value_types(data: dict[str, Any], where: str) -> None:
    """Each recipe value against its field's type annotation and `choices`; the first mismatch is a `RecipeError`
    naming the file, the key, the value and the type expected."""
    fields = _fields()
    for key, value in data.items():
        if key not in fields:
            continue
        tp, field = fields[key]
        choices = field.metadata.get("choices")
        if not _type_ok(value, tp):
            raise RecipeError(f"{where}: `{key}: {value!r}` is not {_describe(tp)}; fix the value of `{key}`.")
        if choices and value is not None and str(value) not in {str(c) for c in choices}:
            raise RecipeError(f"{where}: `{key}: {value!r}` is not one of {', '.join(map(str, choices))}.")


#: (lowest, highest) value a run can use, inclusive (None: open); -1 is TrainingArguments' "unset" for max_steps
RANGES: dict[str, tuple[float | None, float | None]] = {
    "per_device_train_batch_size": (1, None), "per_device_eval_batch_size": (1, None),
    "gradient_accumulation_steps": (1, None), "eval_accumulation_steps": (1, None), "max_steps": (-1, None),
    "num_train_epochs": (0, None), "learning_rate": (0, None), "warmup_steps": (0, None), "weight_decay": (0, None),
    "adam_beta1": (0, 1), "adam_beta2": (0, 1), "adam_epsilon": (0, None), "max_grad_norm": (0, None),
    "label_smoothing_factor": (0, 1), "logging_steps": (1e-9, None), "save_steps": (1e-9, None),
    "eval_steps": (1e-9, None), "save_total_limit": (0, None), "seed": (0, 2**32 - 1), "data_seed": (0, 2**32 - 1),
    "dataloader_num_workers": (0, None), "dataset_num_proc": (1, None), "max_length": (1, None),
    "lora_r": (1, None), "lora_alpha": (1e-9, None), "lora_dropout": (0, 1),
}


def check_ranges(objs: tuple[Any, ...], where: str) -> None:
    """Numeric values of the parsed recipe (file and command line) within `RANGES`, else a `RecipeError`."""
    for obj in objs:
        for key, (low, high) in RANGES.items():
            problem = out_of_range(key, getattr(obj, key, None), low, high)
            if problem:
                raise RecipeError(f"{where}: {problem}")
    sft = next((o for o in objs if hasattr(o, "num_train_epochs")), None)
    if sft is not None and sft.max_steps <= 0 and sft.num_train_epochs == 0:
        raise RecipeError(f"{where}: `max_steps: {sft.max_steps}` with `num_train_epochs: 0` trains no step; set "
                          "max_steps or num_train_epochs above 0.")


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
    recipe_path, written = None, {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise RecipeError("--config needs the path of a YAML recipe.")
        recipe_path = argv[i + 1]
        written |= set(load_recipe_file(recipe_path))
    _check_cli_keys(argv)
    parser = TrlParser(RECIPE_DATACLASSES)
    where = recipe_path or "command line"

    def argparse_error(message: str) -> typing.NoReturn:
        raise RecipeError(f"{where}: {message}")

    parser.error = argparse_error  # argparse would print the usage and exit; name the key like every other error
    try:
        with warnings.catch_warnings():
            if not {"gradient_checkpointing", "gradient_checkpointing_kwargs"} & written:
                # TRL's own SFTConfig default sets the deprecated alias; only a recipe that writes it hears of it
                warnings.filterwarnings("ignore", message="`gradient_checkpointing` is deprecated",
                                        category=FutureWarning)
            qa, sft, model = parser.parse_args_and_config(args=argv)
    except RecipeError:
        raise
    except (ValueError, TypeError) as err:
        raise RecipeError(f"{where}: {err}") from err
    check_ranges((qa, sft, model), where)
    if recipe_path and "--dataset_path" not in argv:
        qa.dataset_path = beside_recipe(qa.dataset_path, recipe_path)
    if qa.gguf_file and model.model_name_or_path and not model.model_name_or_path.endswith(".gguf"):
        model.model_name_or_path = f"{model.model_name_or_path.rstrip('/')}/{qa.gguf_file.lstrip('/')}"
    return qa, sft, model, recipe_path


def beside_recipe(path: str | None, recipe_path: str) -> str | None:
    """A relative data path of a recipe file, read from the working directory where it exists there, else from the
    recipe's own folder (said, with the path used) where it exists there; otherwise unchanged (a hub id, or a file
    that is missing either way, which the reader then reports)."""
    import glob

    if not path or os.path.isabs(path) or glob.glob(path):
        return path
    candidate = os.path.join(os.path.dirname(recipe_path), path)
    if os.path.dirname(recipe_path) and glob.glob(candidate):
        print(f"[genqa] dataset_path {path}: not found from the working directory ({os.getcwd()}); using {candidate}, "
              "relative to the recipe's folder.", file=sys.stderr)
        return candidate
    return path


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


def training_mode(model: ModelConfig) -> str:
    """What trains, in one line, for the first lines of every run and `--dry_run`: LoRA, QLoRA or the whole model."""
    if not model.use_peft:
        return ("full fine-tune: every weight of the model trains (the recipe has no `use_peft: true`); the run "
                "folder will hold a whole model, not an adapter")
    targets = model.lora_target_modules or "the model's default projections"
    targets = ", ".join(targets) if isinstance(targets, list) else targets
    kind = "LoRA"
    if model.use_rslora or model.use_dora:
        kind = "rsLoRA" if model.use_rslora else "DoRA"
    if model.load_in_4bit or model.load_in_8bit:
        bits = f"4-bit {model.bnb_4bit_quant_type.upper()}" if model.load_in_4bit else "8-bit"
        return f"QLoRA: {kind} r={model.lora_r} alpha={model.lora_alpha} on {targets}, base loaded in {bits}, frozen"
    return f"{kind}: r={model.lora_r} alpha={model.lora_alpha} on {targets}; the base model stays frozen"


def trainable_parameters(model: Any) -> str:
    """`N trainable parameters of M (p%)` for a built model (PEFT-wrapped or not)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"{trainable:,} trainable parameters of {total:,} ({100 * trainable / max(total, 1):.2f}%)"


def dump_recipe(data: dict[str, Any], path: str | os.PathLike) -> None:
    """Write a recipe mapping as YAML, atomically."""
    write_atomic(path, yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
