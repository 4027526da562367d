"""A causal LM and its tokenizer written as one GGUF file (what llama.cpp, Ollama and LM Studio run).

Everything GGUF-specific is the `gguf` package's (llama.cpp's own Python library): `GGUFWriter`, `GGUFReader`, the
quantizers in `gguf.quants`, the token types and `SpecialVocab` (merges, special token ids). Tensor names come from
transformers' own GGUF map (`get_gguf_hf_weights_map`, built on `gguf`'s `TensorNameMap`), the one transformers
reads the file back with, and the two changes its loader undoes are applied here in reverse: llama's Q/K rows are
permuted back to llama.cpp's rotary layout, and Gemma's RMSNorm weights are stored as `1 + w`.

Two ways to the metadata:

- the base came from a `.gguf` (`pkg:` models, `.gguf` paths: `genqa.backbones.gguf_models.convert_gguf` records the
  file in `GENQA_GGUF.json`): every key of that file (architecture, tokenizer, rope, ...) is carried over and only the
  tensors are replaced, so the export runs wherever the original did;
- no source file (`tiny:llama`, a hub Llama): the llama architecture keys and a byte-level BPE tokenizer (gpt2 vocab,
  merges, special token ids) are written from the model config and the Hugging Face tokenizer.

Either way the file gets the chat template the run trained with, its end-of-turn token as `eot_token_id` (a stop
token for llama.cpp), and genqa's own keys under `genqa.` (base, recipe digest, task).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genqa.errors import GenqaError

#: what `--quant` offers: the types `gguf.quants` can *write* (its K-quants, e.g. Q4_K_M, only read)
QUANTS = ("f32", "f16", "bf16", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
#: transformers' model_type -> GGUF architecture name, for the architectures genqa writes
ARCHITECTURES = {"llama": "llama", "gemma3_text": "gemma3"}
#: what a byte-level BPE tokenizer's pre-tokenizer is called in llama.cpp (the plain GPT-2 split)
GPT2_PRE = "gpt-2"


class ExportError(GenqaError, ValueError):
    """A model, tokenizer or source file that cannot be written as GGUF, or a written file that fails its check."""


@dataclass
class GGUFContent:
    """What goes into the file besides the weights."""

    chat_template: str
    eot_token_id: int | None
    genqa: dict[str, str] = field(default_factory=dict)  #: written as `genqa.<key>` strings
    source: Path | None = None  #: the .gguf the base came from: its metadata and tokenizer are carried over


def ggml_type(quant: str):
    """The `GGMLQuantizationType` of a `--quant` name."""
    from gguf import GGMLQuantizationType

    if quant not in QUANTS:
        raise ExportError(f"--quant {quant}: not a type genqa can write; use one of {', '.join(QUANTS)} (the gguf "
                          "library quantizes these; K-quants such as q4_k_m need llama.cpp's llama-quantize).")
    return GGMLQuantizationType[quant.upper()]


def file_type(quant: str) -> int:
    """`general.file_type` (llama.cpp's `LlamaFileType`) of a `--quant` name."""
    from gguf import LlamaFileType

    names = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16"}
    return int(LlamaFileType[names.get(quant, f"MOSTLY_{quant.upper()}")])


def architecture(config) -> str:
    """The GGUF architecture genqa writes for a model of `config`, or an `ExportError` naming the ones it can."""
    model_type = getattr(config, "model_type", None)
    classes = getattr(config, "architectures", None) or []
    if model_type not in ARCHITECTURES or (classes and not any(c.endswith("ForCausalLM") for c in classes)):
        raise ExportError(f"cannot export a {', '.join(classes) or model_type} model (model_type {model_type!r}) to "
                          f"GGUF: genqa writes the causal LM architectures {', '.join(sorted(ARCHITECTURES))}. Serve "
                          "this model from its merged folder (vLLM, TGI) instead.")
    return ARCHITECTURES[model_type]


def tensor_names(model, arch: str) -> dict[str, str]:
    """HF parameter name -> GGUF tensor name, from transformers' own GGUF map (tied weights written once)."""
    from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor, get_gguf_hf_weights_map

    processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=model.config.to_dict())
    to_hf = get_gguf_hf_weights_map(model, processor)
    names = {hf: gguf_name for gguf_name, hf in to_hf.items()}
    if model.config.get_text_config().tie_word_embeddings:
        names.pop("lm_head.weight", None)
    missing = [n for n in model.state_dict() if n not in names and not n.startswith("lm_head.")]
    if missing:
        raise ExportError(f"no GGUF name for the {arch} tensors {', '.join(missing[:5])}: this model is not one "
                          "llama.cpp's architecture describes.")
    return names


def to_gguf_layout(array: np.ndarray, gguf_name: str, arch: str, config) -> np.ndarray:
    """A weight as llama.cpp stores it: the inverse of what transformers' GGUF loader does on the way in."""
    if arch == "llama" and gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
        heads = config.num_attention_heads if "attn_q" in gguf_name else config.num_key_value_heads
        # rows of each head go from (pair, half) order back to llama.cpp's interleaved rotary order
        return array.reshape(heads, 2, array.shape[0] // heads // 2, *array.shape[1:]).swapaxes(1, 2).reshape(
            array.shape)
    if arch == "gemma3" and gguf_name.endswith("norm.weight"):
        return array + 1  # Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores the factor itself
    return array


def encode_tensor(array: np.ndarray, qtype) -> tuple[np.ndarray, Any]:
    """(data, raw_dtype) for `GGUFWriter.add_tensor`: 1-D tensors (norms, biases) stay F32 as llama.cpp keeps them,
    a row the quantization block does not divide falls back to F16."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    array = np.ascontiguousarray(array, dtype=np.float32)
    if array.ndim < 2 or qtype == GGMLQuantizationType.F32:
        return array, None
    if qtype == GGMLQuantizationType.F16 or array.shape[-1] % GGML_QUANT_SIZES[qtype][0]:
        return array.astype(np.float16), None
    return quants.quantize(array, qtype), qtype


def write_gguf(path: Path, model, tokenizer, quant: str, content: GGUFContent, tokenizer_dir: Path) -> dict[str, Any]:
    """Write `model` and `tokenizer` to `path` (the caller places it atomically); returns a summary."""
    import gguf

    arch = architecture(model.config)
    qtype = ggml_type(quant)
    writer = gguf.GGUFWriter(str(path), arch)
    try:  # the file is closed however the write ends (the caller removes a partial one)
        if content.source is not None:
            expected = carry_metadata(writer, content.source, arch, model.get_input_embeddings().weight.shape[0])
        else:
            expected = None
            write_architecture(writer, arch, model.config)
            write_bpe_tokenizer(writer, tokenizer, tokenizer_dir, model.get_input_embeddings().weight.shape[0])
        writer.add_chat_template(content.chat_template)
        if content.eot_token_id is not None:
            writer.add_eot_token_id(content.eot_token_id)
        for key, value in content.genqa.items():
            writer.add_string(f"genqa.{key}", value)
        writer.add_file_type(file_type(quant))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        types = add_tensors(writer, model, arch, qtype, expected)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return {"architecture": arch, "quant": quant, "tensor_types": types,
            "metadata": "carried over from " + str(content.source) if content.source else "written by genqa"}


def add_tensors(writer, model, arch: str, qtype, expected: set[str] | None) -> dict[str, int]:
    """Add every weight under its GGUF name; with a source file, exactly the tensors it has. Returns type counts."""
    names = tensor_names(model, arch)
    state = model.state_dict()
    if expected is not None and set(names.values()) != expected:
        extra, missing = sorted(set(names.values()) - expected), sorted(expected - set(names.values()))
        raise ExportError(f"the model's tensors do not match its source GGUF file (not in the file: {extra[:5]}; "
                          f"missing from the model: {missing[:5]}); was the base replaced?")
    counts: dict[str, int] = {}
    for hf_name, gguf_name in names.items():
        array = to_gguf_layout(state[hf_name].detach().float().cpu().numpy(), gguf_name, arch, model.config)
        data, raw = encode_tensor(array, qtype)
        writer.add_tensor(gguf_name, data, raw_dtype=raw)
        kind = raw.name if raw is not None else {np.float32: "F32", np.float16: "F16"}[data.dtype.type]
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def write_architecture(writer, arch: str, config) -> None:
    """The `<arch>.*` hyperparameters llama.cpp (and transformers' GGUF loader) read, from the HF config."""
    if arch == "gemma3":
        check_gemma3(config)
    theta = rope_theta(config)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(theta)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_vocab_size(config.vocab_size)
    if arch == "gemma3":
        writer.add_sliding_window(config.sliding_window)
        writer.add_sliding_window_pattern([t == "sliding_attention" for t in config.layer_types])


def check_gemma3(config) -> None:
    """Refuse a Gemma 3 whose settings GGUF metadata written from scratch does not carry: transformers' reader would
    take them back as Gemma 3's defaults, and llama.cpp scales queries by 1/sqrt(head_dim) (so
    `query_pre_attn_scalar` must be the head size, as in google/gemma-3-270m: 256)."""
    from transformers import Gemma3TextConfig

    default = Gemma3TextConfig(num_hidden_layers=config.num_hidden_layers, head_dim=config.head_dim)
    keys = ("query_pre_attn_scalar", "final_logit_softcapping", "attn_logit_softcapping", "layer_types")
    differ = [k for k in keys if getattr(config, k, None) != getattr(default, k, None)]
    if config.query_pre_attn_scalar != config.head_dim and "query_pre_attn_scalar" not in differ:
        differ.append("query_pre_attn_scalar (not the head size)")
    if differ:
        raise ExportError(f"this Gemma 3 sets {', '.join(differ)} away from what GGUF metadata written from scratch "
                          "carries; export a model whose base came from a .gguf file (as genqa's pkg: Gemma does), "
                          "whose metadata is carried over.")


def rope_theta(config) -> float:
    """The one RoPE base of the model (Gemma 3: of its sliding and full attention layers alike), or an
    `ExportError`: scaled RoPE, or two bases, are what transformers' GGUF reader cannot give back, so such an
    export could not be checked."""
    rope = getattr(config, "rope_parameters", None) or {}
    kinds = list(rope.values()) if rope and all(isinstance(v, dict) for v in rope.values()) else [rope]
    if any(k.get("rope_type", "default") != "default" for k in kinds) or len({k.get("rope_theta") for k in kinds}) > 1:
        raise ExportError(f"RoPE {rope}: genqa writes GGUF metadata for one plain RoPE base only (scaled RoPE, or "
                          "different bases per layer type, would not read back the same); export a model whose base "
                          "came from a .gguf file, whose metadata is carried over.")
    return float(kinds[0].get("rope_theta", 10000.0))


def write_bpe_tokenizer(writer, tokenizer, folder: Path, n_vocab: int) -> None:
    """A byte-level BPE tokenizer as llama.cpp's `gpt2` model: every token with its type (added special tokens are
    CONTROL, other added tokens USER_DEFINED), merges and special token ids through `gguf.SpecialVocab`."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    pre = spec.get("pre_tokenizer") or {}
    if spec["model"]["type"] != "BPE" or (spec.get("decoder") or {}).get("type") != "ByteLevel" or not (
            pre.get("type") == "ByteLevel" and pre.get("use_regex", True)):
        raise ExportError("the tokenizer is not a plain byte-level BPE (GPT-2 style) tokenizer, the one kind genqa "
                          "writes into GGUF by itself; export a model whose base came from a .gguf file (its "
                          "tokenizer is carried over).")
    vocab = tokenizer.get_vocab()
    if len(vocab) > n_vocab:
        raise ExportError(f"the tokenizer has {len(vocab)} tokens but the model's embeddings only {n_vocab} rows.")
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [gguf.TokenType.UNUSED] * n_vocab
    added = tokenizer.added_tokens_decoder
    for text, index in vocab.items():
        tokens[index] = text
        types[index] = (gguf.TokenType.NORMAL if index not in added else
                        gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(GPT2_PRE)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
    special.chat_template = None  # the run's template is written by the caller
    probe = tokenizer("a")["input_ids"]  # what the tokenizer really adds, not what its config claims
    special.add_special_token = {"bos": bool(probe) and probe[0] == tokenizer.bos_token_id,
                                 "eos": bool(probe) and probe[-1] == tokenizer.eos_token_id}
    special.add_to_gguf(writer, quiet=True)


#: keys of a source file that the export writes itself
REPLACED_KEYS = ("general.architecture", "general.file_type", "general.quantization_version",
                 "tokenizer.chat_template", "tokenizer.ggml.eot_token_id")


def carry_metadata(writer, source: Path, arch: str, n_tokens: int) -> set[str]:
    """Copy every key of the source GGUF file (but the ones the export replaces) into `writer`; returns the names
    of the source's tensors, which the export must write again, all of them and no others."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    source_arch = reader.fields["general.architecture"].contents()
    if source_arch != arch:
        raise ExportError(f"{source}: the source GGUF file is a {source_arch} model, the model to export a {arch} "
                          "one; was the base replaced?")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is not None and len(tokens.data) != n_tokens:
        raise ExportError(f"the model has {n_tokens} token embeddings, the source GGUF file {source} "
                          f"{len(tokens.data)} tokens: tokens added during training cannot be carried over into the "
                          "source's vocabulary.")
    for key, value in reader.fields.items():
        if key.startswith("GGUF.") or key in REPLACED_KEYS or key.startswith("genqa."):
            continue
        main = value.types[0]
        sub = value.types[1] if main == gguf.GGUFValueType.ARRAY and len(value.types) > 1 else None
        writer.add_key_value(key, value.contents(), main, sub_type=sub)
    return {t.name for t in reader.tensors}
