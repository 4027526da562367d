"""The training sequence, written once for every backbone (in the spirit of alignment-handbook's `main()`).

tokenizer → backbone checks → template → task → splits → encoder → encoded splits → run folder → model →
trainer → `train_and_finish` → what the backbone does after training. Each backbone module (`genqa.backbones`)
supplies only what differs: its checks, its encoder and how it encodes the splits, its model loading, its trainer
and its after-training step (the extractive backbone scores its validation rows). The seed is the trainer's: it
seeds at its construction, as before, so a tiny model genqa builds is initialised the same way.
"""

from __future__ import annotations

import os
from types import ModuleType

from trl import ModelConfig, SFTConfig

from genqa.config import QAArguments
from genqa.data.rows import load_canonical_splits
from genqa.data.tasks import get_task
from genqa.data.templates import load_template
from genqa.messages import say
from genqa.recipe import RecipeError
from genqa.run_dir import start_run, train_and_finish


def train(backbone: ModuleType, qa: QAArguments, sft: SFTConfig, model_args: ModelConfig,
          recipe_path: str | None) -> str:
    """Fine-tune `backbone` (a module of `genqa.backbones`) on the recipe's task; returns the run folder."""
    import torch

    from genqa.backbones.loading import load_tokenizer

    where = recipe_path or "command line"
    try:
        tokenizer = load_tokenizer(model_args)
    except ValueError as err:  # e.g. a `pkg:` name whose package ships no model
        raise RecipeError(f"{where}: {err}") from err
    backbone.check(qa, sft, model_args, tokenizer, where)
    template = load_template(qa.template, tokenizer) if backbone.USES_TEMPLATE else ""
    task = get_task(qa)
    train_rows, eval_rows, note = load_canonical_splits(qa, task)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    say(f"[genqa] processes: {world} ({'GPU' if torch.cuda.is_available() else 'CPU'})")
    say(f"[genqa] data: {qa.dataset_path}: {len(train_rows)} train rows; {note}")
    encoder = backbone.encoder(qa, sft, tokenizer, template, task)
    train_ds, eval_ds, reports = backbone.encode_splits(encoder, train_rows, eval_rows, qa, sft, recipe_path)
    resume = start_run(qa, sft, model_args, tokenizer, template, reports, eval_rows)
    model = backbone.load_model(model_args)
    trainer = backbone.trainer(model, tokenizer, encoder, train_ds, eval_ds, eval_rows, qa, sft, model_args)
    folder = train_and_finish(trainer, resume, tokenizer, qa, sft, model_args, reports, eval_rows, backbone)
    backbone.after_training(trainer, encoder, reports, eval_rows, qa, sft)
    return folder
