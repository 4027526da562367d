"""The check of every `genqa export`: the written GGUF file, read back, must do what the merged model does.

Read back through transformers' GGUF loader (`genqa.backbones.gguf_models.load_gguf`, as genqa reads `pkg:` models),
the file must (1) tokenize the run's validation prompts to the same ids as the run's tokenizer, (2) give logits on
those rows within the quantization's tolerance of the merged model's (max |diff| relative to the largest |logit|),
and (3) answer a handful of them greedily as the merged model does (genqa's own generation, both ways).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genqa.data.encoding import PromptEncoder
from genqa.gguf_file import ExportError

#: max |logit diff| accepted, as a fraction of the merged model's largest |logit| on the check rows. Measured on the
#: tiny MCQ run (largest |logit| 12.2): f32 0, f16 4.3e-4, bf16 3.2e-3, q8_0 1.0e-2, q5_1 / q5_0 0.064 / 0.070,
#: q4_1 / q4_0 0.16 / 0.12. The tolerances sit 2-10x above those; deeper real models were not measured here.
TOLERANCE = {"f32": 1e-5, "f16": 5e-3, "bf16": 3e-2, "q8_0": 5e-2, "q5_1": 0.15, "q5_0": 0.15, "q4_1": 0.3,
             "q4_0": 0.3}
#: quantizations whose greedy answers must equal the merged model's
SAME_ANSWERS = ("f32", "f16", "bf16", "q8_0")
#: most new tokens of a greedy check answer (the task's answer budget when smaller)
CHECK_NEW_TOKENS = 32


@dataclass
class ExportCheck:
    """The rows, prompts and encoder an export is checked with."""

    encoder: PromptEncoder
    rows: list[dict[str, Any]]
    batch: dict  #: prompt + answer ids of the rows, as training encoded them
    new_tokens: int

    @property
    def template(self) -> str:
        return self.encoder.template

    @classmethod
    def load(cls, folder: Path, qa, sft, n_rows: int) -> ExportCheck:
        """The check of the model in `folder` (a genqa folder: tokenizer with its template, recipe, rows)."""
        from transformers import AutoTokenizer

        from genqa.backbones.causal_lm import check_batch
        from genqa.backbones.loading import ensure_pad_token
        from genqa.data.tasks import get_task
        from genqa.data.templates import load_template
        from genqa.merge import check_rows

        tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(folder))
        tokenizer.padding_side = "left"
        template = tokenizer.chat_template or load_template(qa.template, tokenizer)
        task = get_task(qa)
        rows = check_rows(str(folder), qa, n_rows)
        encoder = PromptEncoder(task, tokenizer, template, sft.max_length)
        return cls(encoder, rows, check_batch(task, tokenizer, template, sft, rows),
                   min(task.answer_budget, CHECK_NEW_TOKENS))

    def eot_token_id(self) -> int | None:
        """The end-of-turn token's id when the template ends an answer with one token (e.g. `<|eot_id|>`)."""
        return self.encoder.end_ids[0] if len(self.encoder.end_ids) == 1 else None

    def verify(self, path: Path, model, quant: str, tolerance: float | None) -> dict[str, Any]:
        """Read `path` back and compare it with `model`; an `ExportError` names what differs. Returns the figures."""
        import gguf

        from genqa.backbones.gguf_models import load_gguf
        from genqa.backbones.loading import ensure_pad_token
        from genqa.merge import logits_of

        loaded, tokenizer = load_gguf(path)
        loaded.eval()
        tokenizer = ensure_pad_token(tokenizer)
        tokenizer.padding_side = "left"
        other = PromptEncoder(self.encoder.task, tokenizer, self.template, self.encoder.max_length)
        prompts = self.tokenization(other)
        fields = gguf.GGUFReader(str(path)).fields
        self.stored_template(fields)
        ref, got = logits_of(model, self.batch), logits_of(loaded, self.batch)
        scale = float(ref.abs().max())
        diff = float((ref - got).abs().max())
        rel = TOLERANCE[quant] if tolerance is None else tolerance
        same = self.answers(model, loaded, other, prompts)
        figures = {"rows": len(self.rows), "max_abs_logit_diff": diff, "max_abs_logit": scale, "tolerance": rel * scale,
                   "relative_tolerance": rel, "greedy_rows": len(prompts), "greedy_same": same,
                   "adds_bos": adds_bos(fields, tokenizer)}
        print(f"[genqa] GGUF ({quant}) vs merged model on {len(self.rows)} validation rows: max |logit diff| = "
              f"{diff:.3g} (largest |logit| {scale:.3g}; tolerance {rel:g} of it = {rel * scale:.3g}); greedy answers "
              f"identical on {same}/{len(prompts)} rows")
        if diff > rel * scale:
            raise ExportError(f"the exported file does not reproduce the model: max |logit diff| {diff:.3g} > "
                              f"{rel * scale:.3g} ({rel:g} of the largest |logit|); nothing was written.")
        if quant in SAME_ANSWERS and same < len(prompts):
            raise ExportError(f"the exported file answers {len(prompts) - same} of {len(prompts)} check rows "
                              f"differently from the model in {quant}; nothing was written.")
        return figures

    def tokenization(self, other: PromptEncoder) -> list[list[int]]:
        """Prompt ids of the rows, which the file's tokenizer must produce exactly as the run's does."""
        prompts = [self.encoder.encode_prompt(r, self.new_tokens)[0] for r in self.rows]
        for i, (row, ids) in enumerate(zip(self.rows, prompts, strict=True)):
            theirs = other.encode_prompt(row, self.new_tokens)[0]
            if theirs != ids:
                at = len(os.path.commonprefix([ids, theirs]))
                raise ExportError(f"the exported tokenizer encodes check row {i} differently from the run's (first "
                                  f"difference at token {at}: {ids[at:at + 3]} vs {theirs[at:at + 3]}); nothing was "
                                  "written.")
        return prompts

    def stored_template(self, fields: dict) -> None:
        """The chat template written into the file (`fields`: its GGUF metadata), rendered by plain Jinja2 as
        llama.cpp's Python bindings do (a sandbox with `trim_blocks` / `lstrip_blocks`, no transformers extensions),
        must give genqa's prompts."""
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        field = fields.get("tokenizer.chat_template")
        if field is None:
            raise ExportError("the exported file has no `tokenizer.chat_template`; nothing was written.")
        tok = self.encoder.tokenizer
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())
        try:
            template = env.from_string(field.contents())
            for i, row in enumerate(self.rows):
                text = template.render(messages=self.encoder.task.messages(row, with_answer=False),
                                       add_generation_prompt=True, bos_token=tok.bos_token or "",
                                       eos_token=tok.eos_token or "")
                if text != self.encoder.prompt_text(row):
                    raise ExportError(f"the chat template written into the file renders check row {i} differently "
                                      "from the run's template; nothing was written.")
        except jinja2.TemplateError as err:
            raise ExportError(f"the chat template written into the file does not render in plain Jinja2 "
                              f"({type(err).__name__}: {err}); nothing was written.") from err

    def answers(self, model, loaded, other: PromptEncoder, prompts: list[list[int]]) -> int:
        """How many rows the file answers greedily exactly as the model (genqa's generation, one row at a time)."""
        from genqa.backbones.generation import generate_texts

        kwargs = {"batch_size": 1, "max_new_tokens": self.new_tokens, "progress": False, "prompts": prompts}
        mine = generate_texts(model, self.encoder, self.rows, **kwargs)
        theirs = generate_texts(loaded, other, self.rows, **kwargs)
        return sum(a == b for a, b in zip(mine, theirs, strict=True))


def adds_bos(fields: dict, tokenizer) -> bool:
    """Whether llama.cpp adds BOS to what it tokenizes with this file (`tokenizer.ggml.add_bos_token` of its GGUF
    metadata `fields`; without the key, what the file's tokenizer does as transformers reads it)."""
    field = fields.get("tokenizer.ggml.add_bos_token")
    if field is not None:
        return bool(field.contents())
    probe = tokenizer("a")["input_ids"]
    return bool(probe) and probe[0] == tokenizer.bos_token_id
