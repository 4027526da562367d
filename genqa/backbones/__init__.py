"""Backbones: one module per `backbone:` value, all with the same entry points, chosen through `get_backbone`.

| `backbone:` | module | trainer | answers |
|---|---|---|---|
| `causal_lm` | `genqa.backbones.causal_lm` | TRL `SFTTrainer` | generation / MCQ label scoring |
| `seq2seq` | `genqa.backbones.seq2seq` | transformers `Seq2SeqTrainer` | generation |
| `extractive` | `genqa.backbones.extractive` | transformers `Trainer` + span head | spans (`genqa.backbones.spans`) |

Every backbone module defines:

- `AUTO_CLASS`: the transformers Auto class name that loads it;
- `train(qa, sft, model_args, recipe_path) -> str`: fine-tune on the recipe's task, return the run folder;
- `load_model(model_args)`: the base model as training loads it (quantized when the recipe asks);
- `prediction_settings(folders, qa, sft, passed)`: the backbone's own prediction settings (`PredictOptions.settings`),
  from the run or merged folders, the recipe, and the keys `passed` on the command line;
- `predict(model, tokenizer, template, task, rows, options, on_batch)`: raw answers for canonical rows, handed to
  `on_batch(pairs, how)` batch by batch, `pairs` being `(row index, raw text)`;
- `check_batch(task, tokenizer, template, sft, rows)`: model inputs (as training encoded them) on which `genqa.merge`
  compares the merged model with its adapter.

Model names resolve in `genqa.backbones.loading`, which also detects the backbone of a model (`detect_backbone`).
Backbone modules are imported on demand: importing this package loads no model library.
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
    #: the backbone's own settings, from its `prediction_settings` (extractive span search: max_length, doc_stride,
    #: n_best_size, max_answer_length, null_score_diff_threshold, version_2_with_negative)
    settings: dict[str, Any] = field(default_factory=dict)


def no_prediction_settings(folders: list[str | None], qa, sft, passed: set[str]) -> dict[str, Any]:
    """`prediction_settings` of a backbone that needs none beyond `PredictOptions`."""
    return {}


def get_backbone(name: str) -> ModuleType:
    """The module of backbone `name` (`causal_lm`, `seq2seq` or `extractive`)."""
    if name not in MODULES:
        raise ValueError(f"unknown backbone {name!r}; use one of {', '.join(MODULES)}.")
    return importlib.import_module(MODULES[name])


def auto_class(backbone: ModuleType):
    """The transformers Auto class of a backbone module."""
    import transformers

    return getattr(transformers, backbone.AUTO_CLASS)
