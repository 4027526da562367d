"""Causal-LM backbone (LLaMA, Qwen, SmolLM, Chinese-Alpaca ...): trained with TRL's `SFTTrainer`, answers by batched
generation or, for MCQ, by scoring the option labels.

recipe → canonical rows → `PromptEncoder` (template, response-only labels, context-first truncation) → `SFTTrainer`
(LoRA / QLoRA through `peft_config`) → run folder. Prediction prompts come from the same encoder
(`genqa.backbones.generation`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from trl import ModelConfig, SFTConfig

from genqa.backbones import PredictOptions, PredictSettings
from genqa.backbones.batching import OnBatch
from genqa.config import QAArguments
from genqa.data.encoding import PromptEncoder
from genqa.data.encoding import encode_splits as encode_prompt_splits
from genqa.data.tasks import Decoding, Task

NAME = "causal_lm"
AUTO_CLASS = "AutoModelForCausalLM"
PIPELINE_TAG = "text-generation"
#: the prompt and answer share `max_length`; TRL's `SFTConfig` sets its own default, `null` means no limit
DEFAULT_MAX_LENGTH: int | None = None
USES_TEMPLATE = True
FALLBACK = True


def load_model(model_args: ModelConfig):
    """The causal LM as the recipe loads it (dtype, attention, 4-bit), with a generation pad token."""
    from transformers import AutoModelForCausalLM

    from genqa.backbones.loading import load_model as load

    return load(model_args, AutoModelForCausalLM)


def score_trained_positions_only() -> None:
    """Make TRL's fused LM head project only the positions that carry a label on the CPU too.

    TRL 1.16's `add_fused_lm_head` computes per-token log-probabilities in vocabulary tiles without materializing the
    logits; on Triton devices it projects only the positions whose label is not -100, elsewhere every position (so
    that compilers such as Neuron's see one tile shape). On a CPU, shapes cost nothing, and with response-only loss
    most positions are prompt: projecting them onto a 49k vocabulary is pure waste (time, and a positions x 32k fp32
    tile per chunk). TRL has no option for it, so genqa widens TRL's own device test (`_use_triton`, read at every
    forward) to the CPU; the kernels themselves keep their own test and run their plain-torch path. Exact: the same
    log-probabilities at the labelled positions, zeros elsewhere, as before.
    """
    import trl.trainer.utils as trl_utils
    from trl.kernels.chunked_logprob import _use_triton

    if getattr(trl_utils._use_triton, "genqa_cpu_compact", False):
        return

    def compact(device) -> bool:
        return device.type == "cpu" or _use_triton(device)

    compact.genqa_cpu_compact = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact


def detects(config) -> bool:
    """Every decoder-only config no other backbone claims (this is the `FALLBACK` backbone)."""
    return not getattr(config, "is_encoder_decoder", False)


def check(qa: QAArguments, sft: SFTConfig, model_args: ModelConfig, tokenizer, where: str) -> None:
    """Nothing beyond what the recipe parser checks."""


def encoder(qa: QAArguments, sft: SFTConfig, tokenizer, template: str, task: Task) -> PromptEncoder:
    """The prompt encoder training uses: the template, response-only labels, context-first truncation."""
    return PromptEncoder(task, tokenizer, template, sft.max_length,
                         completion_only_loss=sft.completion_only_loss is not False, num_proc=sft.dataset_num_proc)


def encode_splits(encoder: PromptEncoder, train_rows, eval_rows, qa: QAArguments, sft: SFTConfig,
                  recipe_path: str | None) -> tuple:
    """Tokenized training and validation rows with their data reports (`genqa.data.encoding.encode_splits`)."""
    return encode_prompt_splits(encoder, train_rows, eval_rows, sft.eval_strategy, recipe_path or qa.dataset_path)


def trainer(model, tokenizer, encoder: PromptEncoder, train_ds, eval_ds, eval_rows, qa: QAArguments, sft: SFTConfig,
            model_args: ModelConfig):
    """TRL's `SFTTrainer` (LoRA / QLoRA through `peft_config`, length-grouped batches that resume exactly), with
    the generation-based evaluation of `generation_eval_samples`."""
    from trl import SFTTrainer

    from genqa.backbones.loading import lora_config
    from genqa.backbones.sampling import resumable_length_grouping

    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    score_trained_positions_only()
    built = resumable_length_grouping(SFTTrainer)(model=model, args=sft, train_dataset=train_ds, eval_dataset=eval_ds,
                                                  processing_class=tokenizer,
                                                  peft_config=lora_config(model_args, "CAUSAL_LM"))
    if qa.generation_eval_samples and eval_rows is not None:
        from genqa.backbones.generation_eval import GenerationEvalCallback

        rows = eval_rows.select(range(min(qa.generation_eval_samples, len(eval_rows)))).to_list()
        callback = GenerationEvalCallback(encoder, rows, qa.generation_eval_max_new_tokens, qa.metric_lang)
        callback.trainer = built
        built.add_callback(callback)
    return built


def after_training(trainer, encoder: PromptEncoder, reports: list, eval_rows, qa: QAArguments, sft: SFTConfig) -> None:
    """Nothing: `genqa.generate` scores the answers."""


def prediction_settings(folders: list[str | None], qa: QAArguments, sft, passed: set[str]) -> PredictSettings:
    """Generative extractive QA: span-constrained decoding and the no-answer threshold; MCQ generation:
    layout-constrained decoding; from the recipe."""
    return PredictSettings(constrain_to_context=qa.constrain_to_context, no_answer_threshold=qa.no_answer_threshold,
                           constrain_to_layout=qa.constrain_to_layout, nearest_span=qa.nearest_span,
                           key_from_context=qa.key_from_context)


def predict(model, tokenizer, template: str, task: Task, rows: list[dict[str, Any]], options: PredictOptions,
            on_batch: OnBatch | None = None) -> list[str]:
    """Raw answers for canonical rows, decoded as the task says (`task.decoding`): scored labels, scored candidate
    texts, or generated text (held to the task's constraint, the no-answer text scored against the best answer when
    it has a threshold); `on_batch(pairs, how)` after every batch."""
    from genqa.backbones.generation import generate_texts, score_labels, score_texts

    encoder = PromptEncoder(task, tokenizer, template, options.max_length)
    decoding = task.decoding(options.settings, options.mcq_mode)
    if decoding.mode == "score_labels":
        sink = (lambda done: on_batch(done, "label_score")) if on_batch else None
        return score_labels(model, encoder, rows, decoding.labels_of, options.batch_size, sink, options.progress)
    if decoding.mode == "score_texts":
        sink = (lambda done: on_batch(done, "option_score")) if on_batch else None
        return score_texts(model, encoder, rows, decoding.candidates_of, decoding.per_char, options.batch_size, sink,
                           options.progress)
    sink = (lambda done: on_batch(done, "generate")) if on_batch else None
    if decoding.no_answer_threshold is None:
        return generate_texts(model, encoder, rows, options.batch_size, options.max_new_tokens, options.num_beams,
                              options.do_sample, sink, options.progress, constraint=decoding.constraint)
    return predict_with_no_answer(model, encoder, decoding, rows, options, sink)


def predict_with_no_answer(model, encoder: PromptEncoder, decoding: Decoding, rows: list[dict[str, Any]],
                           options: PredictOptions, sink: Callable | None) -> list[str]:
    """The best (constrained) answer of every row, then the no-answer text scored against it
    (`genqa.backbones.no_answer`): "" where it wins by more than the threshold; all rows reported at the end."""
    from genqa.backbones.generation import encode_prompts, generate_texts
    from genqa.backbones.no_answer import apply_threshold, null_score_diffs

    prompts = encode_prompts(encoder, rows, options.max_new_tokens)  # once, for generation and the no-answer scores
    texts = generate_texts(model, encoder, rows, options.batch_size, options.max_new_tokens, options.num_beams,
                           options.do_sample, None, options.progress, constraint=decoding.constraint, prompts=prompts)
    diffs = null_score_diffs(model, encoder, rows, texts, decoding.no_answer_text, options.batch_size,
                             options.max_new_tokens, prompts=prompts)
    texts = apply_threshold(texts, diffs, decoding.no_answer_threshold)
    if sink:
        sink(list(enumerate(texts)))
    return texts


def check_batch(task: Task, tokenizer, template: str, sft: SFTConfig, rows: list[dict[str, Any]]) -> dict:
    """Prompt + answer ids of `rows`, encoded as training encoded them, padded."""
    encoder = PromptEncoder(task, tokenizer, template, sft.max_length)
    seqs = [s for s in (encoder.encode(r)["input_ids"] for r in rows) if s] or [tokenizer("check")["input_ids"]]
    return dict(tokenizer.pad([{"input_ids": s} for s in seqs], return_tensors="pt"))
