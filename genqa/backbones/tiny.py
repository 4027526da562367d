"""Tiny offline models that genqa builds itself, deterministically, with no download.

`tiny:llama`, `tiny:gemma3` and `tiny:t5` in a recipe's `model_name_or_path` resolve (through
`genqa.backbones.loading`) to a folder under `$GENQA_CACHE` (default `~/.cache/genqa`) holding a freshly initialised
model and a byte-level BPE tokenizer trained on a fixed multilingual corpus (the project's sample data plus a few
sentences). They check the pipeline end to end on a CPU; they are not useful models.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from genqa.files import cache_dir  # noqa: F401  (tiny models are built under it; tests import it from here)
from genqa.recipe import RecipeError
from genqa.resources import resource_dir

TINY_PREFIX = "tiny:"
TINY_VERSION = "3"
SAMPLE_DIR = resource_dir("sample_data")
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                  "<|eot_id|>", "<|im_start|>", "<|im_end|>"]
EXTRA_CORPUS = [
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.",
    "Answer the question with a short span copied from the context. unanswerable",
    "Read the context and answer the multiple-choice question with the label of the correct option.",
    "Question: Answer: Context: Options: A. B. C. D. 1 2 3 4",
    "以下是描述任务的指令。请编写一个回答，恰当地完成该请求。 指令 回答 文章 問題 選項 正確答案",
    "Câu hỏi: Đáp án: Ngữ cảnh: Hãy đọc đoạn văn và trả lời câu hỏi trắc nghiệm.",
    "You are a helpful assistant. 你是一个乐于助人的助手。 system user assistant",
]


def is_tiny(name: str | None) -> bool:
    """True for `tiny:<kind>` model names."""
    return bool(name) and name.startswith(TINY_PREFIX)


@functools.lru_cache(maxsize=1)
def _corpus() -> tuple[str, ...]:
    """The tokenizer / warm-up corpus (read once per process: its hash names the cache folder)."""
    lines = list(EXTRA_CORPUS)
    for path in sorted(SAMPLE_DIR.glob("*")):
        if path.suffix in (".json", ".jsonl", ".csv"):
            lines.extend(path.read_text(encoding="utf-8").splitlines())
        elif path.suffix == ".xlsx":
            import pandas as pd

            frame = pd.read_excel(path, dtype=str).fillna("")
            lines.extend(" ".join(row) for row in frame.astype(str).values.tolist())
            lines.append(" ".join(frame.columns))
    return tuple(lines)


def build_tokenizer(vocab_size: int = 1200, extra_special: tuple[str, ...] = ()):
    """A byte-level BPE tokenizer trained on the fixed corpus, with the special tokens of every shipped template
    (and `extra_special` ones: Gemma's turn markers for `tiny:gemma3`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = SPECIAL_TOKENS + list(extra_special)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", additional_special_tokens=special[4:],
                                   model_max_length=4096)


def warm_up(model, tokenizer, steps: int = 150, block: int = 128, lr: float = 3e-3) -> None:
    """A few seconds of full-parameter language modelling on the fixed corpus, so the tiny model has seen the
    scripts and layouts it is fine-tuned on (a random model makes LoRA checks meaningless)."""
    import torch

    ids: list[int] = []
    for line in _corpus():
        ids.extend(tokenizer(line, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id])
    n = max(1, len(ids) // block)
    data = torch.tensor(ids[: n * block]).view(n, block)
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = data[torch.randint(0, n, (8,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def build_llama(path: Path) -> None:
    """Write a tiny randomly initialised (seeded) Llama model and its tokenizer to `path`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    _save_warmed(LlamaForCausalLM, config, tokenizer, path)


def _save_warmed(model_class, config, tokenizer, path: Path) -> None:
    """A seeded causal LM of `config`, warmed up on the corpus, saved with its tokenizer to `path`."""
    import torch

    torch.manual_seed(0)
    model = model_class(config)
    warm_up(model, tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


def build_gemma3(path: Path) -> None:
    """Write a tiny randomly initialised (seeded) Gemma 3 text model and its tokenizer to `path`.

    It keeps what sets Gemma 3 apart from Llama, so the fast tests exercise it: embeddings scaled by sqrt(width),
    sliding-window layers (window 48, shorter than some test prompts) beside global ones, `query_pre_attn_scalar`, and a
    final logit soft-cap (google/gemma-3-270m has none; Gemma 2 caps at 30), which genqa's LM-head shortcut must
    apply exactly as the model's forward does.
    """
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = build_tokenizer(extra_special=("<start_of_turn>", "<end_of_turn>"))
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
                              sliding_window=48, max_position_embeddings=4096, final_logit_softcapping=30.0,
                              layer_types=["sliding_attention", "full_attention", "sliding_attention",
                                           "full_attention"],
                              bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                              pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    _save_warmed(Gemma3ForCausalLM, config, tokenizer, path)


def build_t5(path: Path) -> None:
    """Write a tiny randomly initialised (seeded) T5 model and its tokenizer to `path`."""
    import torch
    from tokenizers import processors
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = build_tokenizer()
    eos = tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(  # T5 tokenizers end inputs with </s>
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)])
    config = T5Config(bos_token_id=tokenizer.bos_token_id, vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128,
                      num_layers=2, num_decoder_layers=2,
                      num_heads=4, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                      decoder_start_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)


BUILDERS = {"llama": build_llama, "gemma3": build_gemma3, "t5": build_t5}


def check_kind(name: str) -> str:
    """The kind of tiny model `tiny:<kind>` names, or a `RecipeError` listing the kinds genqa builds."""
    kind = name[len(TINY_PREFIX):]
    if kind not in BUILDERS:
        raise RecipeError(f"model_name_or_path: unknown tiny model {name!r}; use one of "
                          f"{', '.join(TINY_PREFIX + k for k in BUILDERS)}.")
    return kind


def build(name: str) -> str:
    """The folder of tiny model `tiny:<kind>`, built once (atomically) under the cache folder."""
    kind = check_kind(name)
    digest = hashlib.sha256("\n".join(_corpus()).encode("utf-8")).hexdigest()[:10]
    target = cache_dir() / "tiny" / f"{kind}-v{TINY_VERSION}-{digest}"
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=target.parent))
    try:
        BUILDERS[kind](tmp)
        (tmp / "GENQA_TINY.json").write_text(json.dumps({"kind": kind, "version": TINY_VERSION,
                                                         "note": "pipeline check, not a useful model"}))
        try:
            os.replace(tmp, target)
        except OSError:  # built concurrently by another process: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
