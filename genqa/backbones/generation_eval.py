"""Generation-based evaluation during training: the task's own metric (EM/F1, accuracy, MCQ-generation validity) on a
validation subset, computed with the same prediction code as `genqa.generate` at every evaluation.

Enabled by the recipe key `generation_eval_samples: N` (0 = off); logged as `eval_gen_<metric>`.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from genqa.backbones import PredictSettings
from genqa.backbones.generation import generate_texts, score_labels, score_texts
from genqa.data.encoding import PromptEncoder
from genqa.scoring.task_metrics import task_metrics


def predict_answers(model, encoder: PromptEncoder, rows: list[dict[str, Any]], max_new_tokens: int,
                    batch_size: int = 16) -> dict[str, str | None]:
    """Answers of a causal LM for canonical rows, read back the way genqa.generate reads them."""
    task = encoder.task
    decoding = task.decoding(PredictSettings())  # unconstrained, as the model answers on its own
    if decoding.mode == "score_labels":
        raws, how = score_labels(model, encoder, rows, decoding.labels_of, batch_size, progress=False), "label_score"
    elif decoding.mode == "score_texts":
        raws = score_texts(model, encoder, rows, decoding.candidates_of, decoding.per_char, batch_size, progress=False)
        how = "option_score"
    else:
        raws, how = generate_texts(model, encoder, rows, batch_size, max_new_tokens, progress=False,
                                   constraint=decoding.constraint), "generate"
    return {row["id"]: task.read_answer(row, raw, how)[0] for row, raw in zip(rows, raws, strict=True)}


class GenerationEvalCallback(TrainerCallback):
    """After each evaluation, generate on the first `n` validation rows and log the task metric."""

    def __init__(self, encoder: PromptEncoder, rows: list[dict[str, Any]], max_new_tokens: int = 64,
                 lang: str = "en") -> None:
        self.encoder, self.rows, self.max_new_tokens, self.lang = encoder, rows, max_new_tokens, lang
        self.trainer = None

    def on_evaluate(self, args, state, control, model=None, metrics=None, **kwargs):
        """Run the generation pass on every process, add `eval_gen_*` to the evaluation's metrics and log them.

        Every rank generates because with sharded weights (DeepSpeed ZeRO-3, FSDP) each forward pass gathers the shards
        from all ranks: a main-process-only pass would wait forever. Under DDP the other ranks would wait at the next
        step anyway. Every rank also scores (greedy answers are the same on each): `metrics` is the dict
        `Trainer.evaluate` returns, which `metric_for_best_model: eval_gen_f1` (checkpoint selection, on every rank)
        and early stopping read, so the task metric is a real evaluation metric, not only a logged one.
        """
        if self.trainer is None or not self.rows:
            return
        model = self.trainer.model
        was_training = model.training
        model.eval()
        try:
            answers = predict_answers(model, self.encoder, self.rows, self.max_new_tokens)
        finally:
            model.train(was_training)
        scores = task_metrics(self.encoder.task, self.rows, answers, self.lang)
        flat = {f"eval_gen_{k}": v for k, v in scores.items() if isinstance(v, (int, float))}
        if metrics is not None:
            metrics.update(flat)
        self.trainer.log(flat)
