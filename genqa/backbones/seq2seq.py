"""Encoder-decoder (T5) backbone: the same recipe, data, task and template as the causal path, trained as seq2seq.

TRL's `SFTTrainer` treats every model as decoder-only and cannot train T5, so `backbone: seq2seq` (or an
auto-detected encoder-decoder) trains here, through the shared sequence of `genqa.backbones.training`. Everything
up to the trainer is shared with the causal path:

- encoder input = the template's rendering of the task's prompt (`task.messages(ex, with_answer=False)` with
  `add_generation_prompt=True`); the shipped `t5` template renders the user turn as plain text, e.g.
  `prompt_format: "question: {question} context: {context}"` for the T5-paper layout;
- target = `task.target(ex)`: the answer text, or `no_answer_text` for unanswerable rows, which `task.parse` maps
  back to the empty answer;
- both end with the tokenizer's end-of-sequence token (appended when the tokenizer does not add it itself), so the
  decoder learns where to stop;
- an input longer than `max_length` has its *context* cut (keeping an extractive row's answer span), never the
  instruction or question; a row that still does not fit, or whose target is longer than `max_target_length`, is
  dropped and counted in the same `EncodingReport` the causal path prints and saves.

Training is transformers' `Seq2SeqTrainer` with `DataCollatorForSeq2Seq`, full fine-tuning or LoRA
(`use_peft`, task type `SEQ_2_SEQ_LM`); `optim: adafactor` with a constant learning rate of 1e-3 is the T5 paper's
fine-tuning setup. `predict_seq2seq` is the generation half, used by `genqa.generate` for seq2seq run folders.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, Seq2SeqTrainingArguments, TrainingArguments
from trl import ModelConfig, SFTConfig

from genqa.backbones import PredictOptions, no_prediction_settings
from genqa.backbones.batching import OnBatch, pad, run_batches
from genqa.backbones.loading import model_device, trusts_remote_code
from genqa.config import QAArguments
from genqa.data.encoding import CONTEXT_TRUNCATED, OK, TOO_LONG, EncodingReport, PromptEncoder
from genqa.data.encoding import encode_splits as encode_prompt_splits
from genqa.data.tasks import Task
from genqa.recipe import RecipeError

NAME = "seq2seq"
AUTO_CLASS = "AutoModelForSeq2SeqLM"
PIPELINE_TAG = "text2text-generation"
#: the encoder input's budget when the recipe sets `max_length: null`
DEFAULT_MAX_LENGTH = 512
USES_TEMPLATE = True
TARGET_TOO_LONG = "target_too_long"
# SFTConfig keys that only make sense for a decoder-only model; set on a seq2seq run they are a mistake.
CAUSAL_ONLY_KEYS = ("packing", "padding_free", "assistant_only_loss")


def max_target_length(qa: QAArguments) -> int | None:
    """The recipe's `max_target_length` (tokens of the answer, end-of-sequence included); None or <= 0: no limit."""
    value = qa.max_target_length
    return int(value) if value is not None and int(value) > 0 else None


class Seq2SeqEncoder(PromptEncoder):
    """Tokenizes canonical rows into encoder `input_ids` and decoder `labels` for an encoder-decoder model.

    Reuses `PromptEncoder`'s prompt rendering and context-first truncation; differs in what it produces: the prompt
    alone goes to the encoder (no answer appended, no label masking) and the answer is the separate target. The
    template's end-of-turn text is not needed: the target ends with the tokenizer's end-of-sequence token.
    """

    def __init__(self, task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int | None,
                 max_target_length: int | None) -> None:
        # PromptEncoder.__init__ is not called: it derives the end-of-turn text from the assistant turn, which an
        # encoder-decoder never sees in its input.
        self.task, self.tokenizer, self.template = task, tokenizer, template
        self.max_length = max_length
        self.max_target_length = max_target_length
        self.eos_id = tokenizer.eos_token_id
        self.end_text = tokenizer.eos_token or ""
        self.end_ids = [self.eos_id] if self.eos_id is not None else []
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        self.appends_eos = self.eos_id is None or (bool(probe) and probe[-1] == self.eos_id)
        if max_length is not None and max_length < 2:
            raise RecipeError(f"max_length={max_length} leaves no room for an encoder input.")
        if max_target_length is not None and max_target_length < 2:
            raise RecipeError(f"max_target_length={max_target_length} leaves no room for an answer and </s>.")

    def _with_eos(self, ids: list[int]) -> list[int]:
        if self.eos_id is not None and (not ids or ids[-1] != self.eos_id):
            ids = [*ids, self.eos_id]
        return ids

    def token_ids(self, text: str, is_prompt: bool) -> list[int]:
        """Ids of an encoder input or a target: the tokenizer's special tokens, and always a final `</s>`."""
        if is_prompt:
            ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        else:
            ids = self.tokenizer(text_target=text, add_special_tokens=True)["input_ids"]
        return self._with_eos(list(ids))

    def target_ids(self, ex: dict[str, Any]) -> list[int]:
        """Decoder labels of a canonical row: `task.target(ex)` + `</s>`."""
        return self.token_ids(self.task.target(ex), is_prompt=False)

    def encode_prompt(self, ex: dict[str, Any], max_new_tokens: int = 0) -> tuple[list[int], bool]:
        """Encoder ids for generation (the gold answer is not used to choose the context kept); (ids, truncated).

        `max_new_tokens` is accepted for `PromptEncoder` compatibility and ignored: an encoder-decoder's answer does
        not share the input's length budget.
        """
        return super().encode_prompt(ex, 0)

    def encode(self, ex: dict[str, Any]) -> dict[str, Any]:
        """Encoder ids and decoder labels for one canonical row, with its status (ok / context_truncated / dropped)."""
        labels = self.target_ids(ex)
        if self.max_target_length is not None and len(labels) > self.max_target_length:
            return {"input_ids": [], "attention_mask": [], "labels": [], "status": TARGET_TOO_LONG}
        ids, truncated = self.fit_prompt(ex)
        if self.max_length is not None and len(ids) > self.max_length:
            return {"input_ids": [], "attention_mask": [], "labels": [], "status": TOO_LONG}
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels,
                "status": CONTEXT_TRUNCATED if truncated else OK}

    def encode_dataset(self, dataset: Dataset, split: str = "train") -> tuple[Dataset, EncodingReport]:
        """Encode a canonical dataset; drop (and count) rows whose input or target cannot fit."""
        encoded = dataset.map(self.encode, remove_columns=dataset.column_names, desc=f"Tokenizing {split} (seq2seq)",
                              load_from_cache_file=False)
        statuses = encoded["status"]
        report = EncodingReport(split=split, rows=len(dataset), end_token=self.end_text)
        report.context_truncated = statuses.count(CONTEXT_TRUNCATED)
        too_long_input, too_long_target = statuses.count(TOO_LONG), statuses.count(TARGET_TOO_LONG)
        report.dropped_too_long = too_long_input + too_long_target
        kept = encoded.filter(lambda s: s in (OK, CONTEXT_TRUNCATED), input_columns="status").remove_columns("status")
        report.kept = len(kept)
        longest_target = 0
        for ids, labels in zip(kept["input_ids"], kept["labels"], strict=True):
            report.max_tokens = max(report.max_tokens, len(ids))
            longest_target = max(longest_target, len(labels))
            if self.end_ids and labels[-1:] != self.end_ids:
                report.rows_missing_end_token += 1
        report.notes.append(f"seq2seq: encoder inputs up to {report.max_tokens} tokens (max_length={self.max_length}),"
                            f" targets up to {longest_target} tokens (max_target_length={self.max_target_length})")
        if too_long_input:
            report.notes.append(f"{too_long_input} rows dropped: the input does not fit max_length={self.max_length} "
                                "even with the context cut (or the answer span alone is longer than the room left)")
        if too_long_target:
            report.notes.append(f"{too_long_target} rows dropped: the target is longer than max_target_length="
                                f"{self.max_target_length} tokens; raise `max_target_length` to keep them")
        if not self.appends_eos:
            report.notes.append(f"the tokenizer does not add {self.end_text!r} itself; genqa appends it to every "
                                "encoder input and target")
        if report.kept == 0 and report.rows:
            report.notes.append("no row survived: raise max_length / max_target_length or shorten the prompts")
        return kept, report


def seq2seq_training_args(sft: TrainingArguments, max_target_length: int | None = None) -> Seq2SeqTrainingArguments:
    """`Seq2SeqTrainingArguments` carrying every `TrainingArguments` field of the recipe's `SFTConfig`.

    Evaluation during training reports the loss (`predict_with_generate=False`); answers are generated and scored
    afterwards by `genqa.generate` / `genqa.evaluate`, exactly as for causal runs.
    """
    kwargs = {f.name: getattr(sft, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    return Seq2SeqTrainingArguments(**kwargs, predict_with_generate=False, generation_max_length=max_target_length)


def detects(config) -> bool:
    """Encoder-decoder configs (T5, BART, ...)."""
    return bool(getattr(config, "is_encoder_decoder", False))


def check(qa: QAArguments, sft: SFTConfig, model_args: ModelConfig, tokenizer, where: str) -> None:
    """Reject recipe keys that cannot apply to an encoder-decoder, and a model that is not one, naming the key and
    the fix."""
    for key in CAUSAL_ONLY_KEYS:
        if getattr(sft, key, False):
            raise RecipeError(f"{where}: `{key}` applies to causal LMs only; this run trains an encoder-decoder "
                              f"(backbone: seq2seq). Remove `{key}` from the recipe.")
    from transformers import AutoConfig

    from genqa.backbones.loading import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(model_args.model_name_or_path),
                                        revision=model_args.model_revision,
                                        trust_remote_code=trusts_remote_code(model_args))
    if not detects(config):
        raise RecipeError(f"{where}: backbone: {qa.backbone} trains an encoder-decoder, but "
                          f"{model_args.model_name_or_path} ({config.model_type}) is not one. Set `backbone: auto` "
                          "(or `causal_lm`) for this model.")


def encoder(qa: QAArguments, sft: SFTConfig, tokenizer, template: str, task: Task) -> Seq2SeqEncoder:
    """The encoder training uses: the prompt for the encoder, the answer (and `</s>`) as the decoder's labels."""
    return Seq2SeqEncoder(task, tokenizer, template, sft.max_length, max_target_length(qa))


def encode_splits(encoder: Seq2SeqEncoder, train_rows, eval_rows, qa: QAArguments, sft: SFTConfig,
                  recipe_path: str | None) -> tuple:
    """Encoded training and validation rows with their data reports."""
    return encode_prompt_splits(encoder, train_rows, eval_rows, sft.eval_strategy, recipe_path or "command line",
                                hint=f"raise max_length={sft.max_length} or "
                                     f"max_target_length={encoder.max_target_length}")


def load_model(model_args: ModelConfig):
    """The encoder-decoder as the recipe loads it (dtype, 4-bit)."""
    from transformers import AutoModelForSeq2SeqLM

    from genqa.backbones.loading import load_model as load

    return load(model_args, AutoModelForSeq2SeqLM)


def trainer(model, tokenizer, encoder: Seq2SeqEncoder, train_ds, eval_ds, eval_rows, qa: QAArguments,
            sft: SFTConfig, model_args: ModelConfig):
    """transformers' `Seq2SeqTrainer` with `DataCollatorForSeq2Seq`, full fine-tuning or LoRA (`use_peft`, task type
    `SEQ_2_SEQ_LM`); `sft` (the recipe's `SFTConfig`) becomes `Seq2SeqTrainingArguments`."""
    from transformers import DataCollatorForSeq2Seq, Seq2SeqTrainer

    from genqa.backbones.loading import attach_lora
    from genqa.backbones.sampling import resumable_length_grouping

    args = seq2seq_training_args(sft, encoder.max_target_length)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    if model_args.use_peft:
        model = attach_lora(model, model_args, args, "SEQ_2_SEQ_LM")
    collator = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100,
                                      pad_to_multiple_of=getattr(sft, "pad_to_multiple_of", None))
    return resumable_length_grouping(Seq2SeqTrainer)(model=model, args=args, data_collator=collator,
                                                     train_dataset=train_ds, eval_dataset=eval_ds,
                                                     processing_class=tokenizer)


def after_training(trainer, encoder: Seq2SeqEncoder, reports: list, eval_rows, qa: QAArguments,
                   sft: SFTConfig) -> None:
    """Nothing: `genqa.generate` scores the answers."""


prediction_settings = no_prediction_settings


def predict(model, tokenizer, template: str, task: Task, rows: list[dict[str, Any]], options: PredictOptions,
            on_batch: OnBatch | None = None) -> list[str]:
    """Raw generated answers for canonical rows; `on_batch(pairs, "generate")` after every batch."""
    sink = (lambda done: on_batch(done, "generate")) if on_batch else None
    return predict_seq2seq(model, tokenizer, template, task, rows, options.max_length or DEFAULT_MAX_LENGTH,
                           options.max_new_tokens, options.batch_size, options.num_beams, sink, options.progress)


def check_batch(task: Task, tokenizer, template: str, sft: SFTConfig, rows: list[dict[str, Any]]) -> dict:
    """Encoder inputs and decoder labels of `rows`, exactly as the seq2seq trainer encoded them, padded."""
    encoder = Seq2SeqEncoder(task, tokenizer, template, sft.max_length, None)
    encoded = [e for e in map(encoder.encode, rows) if e["input_ids"]]
    batch = tokenizer.pad([{"input_ids": e["input_ids"]} for e in encoded], return_tensors="pt")
    labels = tokenizer.pad([{"input_ids": e["labels"]} for e in encoded], return_tensors="pt")["input_ids"]
    return {**dict(batch), "labels": labels}


def predict_seq2seq(model: Any, tokenizer: PreTrainedTokenizerBase, template: str, task: Task, rows,
                    max_length: int, max_new_tokens: int = 32, batch_size: int = 32, num_beams: int = 1,
                    on_batch: OnBatch | None = None, progress: bool = False) -> list[str]:
    """Generate an answer for every canonical row with an encoder-decoder; raw decoded texts, in row order.

    Prompts are built and context-truncated exactly as in training (the gold answer, if the rows carry one, is never
    used to choose what context to keep). Rows run in length-sorted batches; no row is dropped: an input that still
    does not fit `max_length` is cut at the end. Pass the texts through `task.read_answer` to get answers.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    encoder = Seq2SeqEncoder(task, tokenizer, template, max_length, max_target_length=None)
    prompts: list[list[int]] = []
    truncated = 0
    for ex in rows:
        ids, cut = encoder.encode_prompt(ex)  # never peeks at a gold span when cutting the context
        if max_length is not None and len(ids) > max_length:
            ids, cut = encoder._with_eos(ids[:max_length - 1]), True
        truncated += cut
        prompts.append(ids)
    if truncated:
        print(f"[genqa] predict: {truncated}/{len(prompts)} inputs cut to max_length={max_length} (context first)")
    device = model_device(model)

    def generate_batch(batch: list[int]) -> list[str]:
        inputs = pad(tokenizer, [{"input_ids": prompts[i]} for i in batch], side="right")
        generated = model.generate(input_ids=inputs["input_ids"].to(device),
                                   attention_mask=inputs["attention_mask"].to(device),
                                   max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False)
        return [t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True)]

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return run_batches([len(p) for p in prompts], batch_size, generate_batch, on_batch, progress,
                               "generating")
    finally:
        model.train(was_training)
