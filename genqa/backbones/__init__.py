"""Backbones: one module per `backbone:` value, each carrying the whole backbone interface; this is the registry.

| `backbone:` | module | trainer | answers |
|---|---|---|---|
| `causal_lm` | `genqa.backbones.causal_lm` | TRL `SFTTrainer` | generation / MCQ label scoring |
| `seq2seq` | `genqa.backbones.seq2seq` | transformers `Seq2SeqTrainer` | generation |
| `extractive` | `genqa.backbones.extractive` | transformers `Trainer` + span head | spans (`genqa.backbones.spans`) |

Adding a backbone is its module and one line of `MODULES`: the `backbone:` choices of a recipe, `backbone: auto`
detection, the run card's pipeline tag, `genqa preview`'s encoder and the training sequence
(`genqa.backbones.training`) all ask the registry. Every backbone module defines:

- `AUTO_CLASS`: the transformers Auto class name that loads it; `PIPELINE_TAG`: the Hub pipeline of its models;
- `DEFAULT_MAX_LENGTH`: its token budget when the recipe sets `max_length: null` (None: no limit);
- `USES_TEMPLATE`: whether its prompts go through the recipe's chat template;
- `detects(config) -> bool`: whether a model config is this backbone (`backbone: auto`); a module with
  `FALLBACK = True` takes every config no other backbone claims;
- `encoder(qa, sft, tokenizer, template, task)`: the encoder training uses (`genqa preview` shows its rows when it is
  a `genqa.data.encoding.PromptEncoder`);
- the training steps the shared sequence calls: `check(qa, sft, model_args, tokenizer, where)`,
  `encode_splits(encoder, train_rows, eval_rows, qa, sft, recipe_path)`, `load_model(model_args)`,
  `trainer(model, tokenizer, encoder, train_ds, eval_ds, eval_rows, qa, sft, model_args)` and
  `after_training(trainer, encoder, reports, eval_rows, qa, sft)`;
- `prediction_settings(folders, qa, sft, passed)`: its own prediction settings (`PredictOptions.settings`, a
  `PredictSettings`), from the run or merged folders, the recipe, and the keys `passed` on the command line;
- `predict(model, tokenizer, template, task, rows, options, on_batch)`: raw answers for canonical rows, handed to
  `on_batch(pairs, how)` batch by batch, `pairs` being `(row index, raw text)`;
- `check_batch(task, tokenizer, template, sft, rows)`: model inputs (as training encoded them) on which `genqa.merge`
  compares the merged model with its adapter.

Model names resolve in `genqa.backbones.loading`. Backbone modules are imported on demand: importing this package
loads no model library.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

MODULES: dict[str, str] = {
    "causal_lm": "genqa.backbones.causal_lm",
    "seq2seq": "genqa.backbones.seq2seq",
    "extractive": "genqa.backbones.extractive",
}
#: the values of the recipe key `backbone:`
CHOICES: tuple[str, ...] = ("auto", *MODULES)


@dataclass
class PredictSettings:
    """A backbone's own prediction settings, as its `prediction_settings` works them out (the fields it does not use
    keep their defaults). Fingerprinted with the predictions, so a rerun with other settings is refused."""

    #: causal LM, task extractive: every generated answer is a span of its context (or the no-answer text); None:
    #: a backbone without constrained decoding
    constrain_to_context: bool | None = None
    #: causal LM, task extractive: free answers that are no span read back as the most similar span
    nearest_span: bool | None = None
    #: causal LM, task extractive: score the no-answer text against the best span (None: the model's own choice)
    no_answer_threshold: float | None = None
    #: causal LM, task mcq_generation: every generated text is one MCQ in the task's layout
    constrain_to_layout: bool | None = None
    #: causal LM, task mcq_generation under the layout: the key names an option its context contains, where one does
    key_from_context: bool | None = None
    #: extractive encoders: the span search (window, stride, n-best, answer length, null score, SQuAD 2.0)
    span_search: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The settings as the predictions file records them."""
        if self.span_search:
            return dict(self.span_search)
        if self.constrain_to_context is None and self.constrain_to_layout is None:
            return {}
        out = {"constrain_to_context": self.constrain_to_context, "no_answer_threshold": self.no_answer_threshold,
               "constrain_to_layout": self.constrain_to_layout}
        if self.nearest_span:  # recorded only when on: fingerprints of earlier predictions stay valid
            out["nearest_span"] = True
        if self.key_from_context:
            out["key_from_context"] = True
        return out


@dataclass
class PredictOptions:
    """How `predict` runs: prompt budget, batching and decoding (not every backbone uses every field)."""

    max_length: int | None = None
    batch_size: int = 16
    max_new_tokens: int = 64
    num_beams: int = 1
    do_sample: bool = False
    mcq_mode: str = "score"
    progress: bool = True
    #: the backbone's own settings, from its `prediction_settings`
    settings: PredictSettings = field(default_factory=PredictSettings)


def no_prediction_settings(folders: list[str | None], qa, sft, passed: set[str]) -> PredictSettings:
    """`prediction_settings` of a backbone that needs none beyond `PredictOptions`."""
    return PredictSettings()


def get_backbone(name: str) -> ModuleType:
    """The module of backbone `name` (a key of `MODULES`)."""
    if name not in MODULES:
        raise ValueError(f"unknown backbone {name!r}; use one of {', '.join(MODULES)}.")
    return importlib.import_module(MODULES[name])


def backbone_of_config(config) -> str:
    """The backbone a model config is: the first module whose `detects` claims it, else the fallback module."""
    modules = {name: get_backbone(name) for name in MODULES}
    for name, module in modules.items():
        if not getattr(module, "FALLBACK", False) and module.detects(config):
            return name
    return next(name for name, module in modules.items() if getattr(module, "FALLBACK", False))


def auto_class(backbone: ModuleType):
    """The transformers Auto class of a backbone module."""
    import transformers

    return getattr(transformers, backbone.AUTO_CLASS)
