"""Model and tokenizer loading: dtype, attention, 4-bit NF4 (bitsandbytes), LoRA config, backbone detection.

Uses TRL's `ModelConfig`, `get_quantization_config` and `get_peft_config`; adds the CPU 4-bit fix and the
normalisations users expect (`all-linear` as a single target, a pad token, the task type of the backbone).
"""

from __future__ import annotations

import copy
import logging

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase
from trl import ModelConfig, get_peft_config, get_quantization_config

from genqa.tiny import resolve_model_path

logger = logging.getLogger(__name__)

DTYPES = {"auto": "auto", "float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


def trusts_remote_code(model_args: ModelConfig) -> bool:
    """Whether the recipe allows the model's own code (TRL keeps `trust_remote_code` on SFTConfig; genqa.sft copies
    it onto the ModelConfig)."""
    return bool(getattr(model_args, "trust_remote_code", False))


def torch_dtype(name: str | None):
    """`torch.dtype` (or "auto") for a recipe's `dtype` string; None means float32."""
    if name is None:
        return torch.float32
    if name not in DTYPES:
        raise ValueError(f"dtype: unknown dtype {name!r}; use one of {', '.join(DTYPES)}.")
    return DTYPES[name]


def detect_backbone(model_path: str, requested: str = "auto", trust_remote_code: bool = False) -> str:
    """`causal_lm`, `seq2seq` or `extractive`, from the recipe or (for `auto`) from the model config."""
    if requested != "auto":
        return requested
    config = AutoConfig.from_pretrained(resolve_model_path(model_path), trust_remote_code=trust_remote_code)
    if getattr(config, "is_encoder_decoder", False):
        return "seq2seq"
    archs = " ".join(getattr(config, "architectures", None) or [])
    if "QuestionAnswering" in archs or config.model_type in ("bert", "roberta", "xlm-roberta", "distilbert",
                                                             "electra", "deberta", "deberta-v2", "albert"):
        return "extractive"
    return "causal_lm"


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


def auto_model_class(backbone: str):
    """The transformers Auto class that loads a `causal_lm`, `seq2seq` or `extractive` backbone."""
    from transformers import AutoModelForCausalLM, AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM

    return {"causal_lm": AutoModelForCausalLM, "seq2seq": AutoModelForSeq2SeqLM,
            "extractive": AutoModelForQuestionAnswering}[backbone]


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
    if model_args.load_in_4bit:
        n = disable_cpu_4bit_inference_repack(model)
        logger.info("4-bit: %d Linear4bit layers kept trainable on CPU", n)
    return model


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
