"""Tokenization with response-only labels, context-first truncation and the pre-training sanity report.

`PromptEncoder` turns a canonical row into `input_ids` + `labels` (prompt masked with -100; the answer and the
template's end-of-turn token trained). Whitespace a template writes *after* its end-of-turn token (SmolLM2's and
Qwen's ChatML write `<|im_end|>\n`) is not part of the trained sequence: generation stops at the end-of-turn token, so
that text is never generated, and the training row ends where the answer turn ends.

When a row is too long, the *context* is cut (keeping the answer's span for
extractive rows), never the instruction, question, options or answer. Rows that still do not fit are dropped and
counted, never trained on silently. Generation uses the same encoder for its prompts, so a model is prompted exactly
as it was trained.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from genqa.data.encoded_cache import cached_encoding
from genqa.data.tasks import Task
from genqa.data.templates import end_of_turn, render, split_prompt_completion

OK, CONTEXT_TRUNCATED, TOO_LONG, MASKED = "ok", "context_truncated", "too_long", "fully_masked"


@dataclass
class EncodingReport:
    """Counts of what tokenization did to a split; printed before training and saved in the run folder."""

    split: str = "train"
    rows: int = 0
    kept: int = 0
    context_truncated: int = 0
    dropped_too_long: int = 0
    dropped_fully_masked: int = 0
    end_token: str = ""
    rows_missing_end_token: int = 0
    rows_with_double_bos: int = 0
    max_tokens: int = 0
    #: the longest trained answer in tokens (end token included); 0 when the prompt is trained too
    longest_answer_tokens: int = 0
    #: the prediction budget of generated answers (`Task.answer_budget`); 0 for label-scored tasks
    answer_budget: int = 0
    #: kept rows whose trained answer is longer than `answer_budget`: predictions would cut them
    answers_over_budget: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)

    def summary(self) -> str:
        """One human-readable block."""
        lines = [f"[genqa] {self.split}: {self.kept}/{self.rows} rows kept, longest {self.max_tokens} tokens",
                 f"  context truncated (question/answer kept): {self.context_truncated}",
                 f"  dropped, answer would be truncated away: {self.dropped_too_long}",
                 f"  dropped, no trained token left: {self.dropped_fully_masked}",
                 f"  end-of-answer token {self.end_token!r} trained in every kept row: "
                 f"{'yes' if self.rows_missing_end_token == 0 else f'NO ({self.rows_missing_end_token} rows lack it)'}",
                 f"  rows starting with a double BOS: {self.rows_with_double_bos}"]
        if self.answer_budget and self.longest_answer_tokens:
            lines.append(f"  longest answer {self.longest_answer_tokens} tokens (end token included); longer than the "
                         f"{self.answer_budget}-token prediction budget (max_new_tokens): {self.answers_over_budget}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class PromptEncoder:
    """Renders a task's rows with a template and tokenizes them for training or generation."""

    def __init__(self, task: Task, tokenizer: PreTrainedTokenizerBase, template: str, max_length: int | None,
                 completion_only_loss: bool = True, num_proc: int | None = None) -> None:
        self.task, self.tokenizer, self.template = task, tokenizer, template
        self.max_length = max_length
        self.num_proc = num_proc  # worker processes for `encode_dataset` (TRL's `dataset_num_proc`); None: this one
        self.completion_only_loss = completion_only_loss
        self.end_text = end_of_turn(tokenizer, template)
        stripped = self.end_text.strip()
        self.end_ids = tokenizer(stripped, add_special_tokens=False)["input_ids"] if stripped else []
        # what the template writes after the end-of-turn token (a newline): cut from every training row
        self.after_end = self.end_text[len(self.end_text.rstrip()):] if stripped else ""

    def ends_with_end_token(self, trained: list[int]) -> bool:
        """Whether the trained tokens of a row end with the end-of-turn text (compared as text: a multi-token end text
        may merge with the answer's last characters into other tokens)."""
        if not self.end_ids:
            return True
        if trained[-len(self.end_ids):] == self.end_ids:
            return True
        tail = self.tokenizer.decode(trained[-(len(self.end_ids) + 2):], skip_special_tokens=False)
        return tail.rstrip().endswith(self.end_text.strip())

    # ---- prompt --------------------------------------------------------------------------------------------------
    def prompt_text(self, ex: dict[str, Any]) -> str:
        """The prompt that generation starts from (ends where the answer begins)."""
        return render(self.tokenizer, self.template, self.task.messages(ex, with_answer=False),
                      add_generation_prompt=True)

    def token_ids(self, text: str, is_prompt: bool) -> list[int]:
        """Ids of a prompt (BOS added unless the template wrote it) or of a completion (no special tokens)."""
        return self.token_ids_batch([text], is_prompt)[0]

    def token_ids_batch(self, texts: list[str], is_prompt: bool) -> list[list[int]]:
        """`token_ids` of many texts in (at most) two batched tokenizer calls: with and without special tokens."""
        bos = self.tokenizer.bos_token
        # a template that writes BOS itself gets no second one
        add = [is_prompt and not (bos and t.startswith(bos)) for t in texts]
        out: list[list[int]] = [[] for _ in texts]
        for flag in (True, False):
            idx = [i for i, a in enumerate(add) if a == flag]
            if idx:
                ids = self.tokenizer([texts[i] for i in idx], add_special_tokens=flag)["input_ids"]
                for i, row in zip(idx, ids, strict=True):
                    out[i] = row
        return out

    def _context_windows(self, ex: dict[str, Any], overflow: int):
        """Shorter contexts to try: cut `overflow`+ tokens, keeping the gold span of extractive rows."""
        context = ex["context"]
        enc = self.tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        n = len(offsets)
        span = None
        if ex.get("answer_starts"):
            s = ex["answer_starts"][0]
            span = (s, s + len(ex["answers"][0]))
        cut = overflow
        while cut < n:
            keep = n - cut
            start = 0
            if span is not None and offsets[keep - 1][1] < span[1]:
                first = next(i for i, (_, e) in enumerate(offsets) if e >= span[1])  # token ending the answer
                start = max(0, first - keep + 1)
                if offsets[start][0] > span[0]:
                    return  # the answer alone is longer than the room left
            yield context[offsets[start][0]:offsets[start + keep - 1][1]]
            cut += max(1, (n - cut) // 10)

    def encode_prompt(self, ex: dict[str, Any], max_new_tokens: int = 0) -> tuple[list[int], bool]:
        """Prompt ids for generation, the context cut to leave `max_new_tokens` room; returns (ids, truncated)."""
        # at prediction time the gold span must not steer the cut
        return self.fit_prompt({**ex, "answers": [], "answer_starts": []}, max_new_tokens)

    def fit_prompt(self, ex: dict[str, Any], reserve: int = 0) -> tuple[list[int], bool]:
        """Prompt ids of a row, the context cut until they leave `reserve` tokens within `max_length`; returns (ids,
        context_was_cut). A gold span in `answer_starts` is kept inside the cut context; the ids can still be too
        long when even the shortest context does not fit (the caller drops or cuts the row)."""
        ids = self.token_ids(self.prompt_text(ex), is_prompt=True)
        if self.max_length is None or len(ids) + reserve <= self.max_length or not ex["context"]:
            return ids, False
        for context in self._context_windows(ex, len(ids) + reserve - self.max_length):
            ids = self.token_ids(self.prompt_text({**ex, "context": context}), is_prompt=True)
            if len(ids) + reserve <= self.max_length:
                break
        return ids, True

    # ---- training rows -----------------------------------------------------------------------------------------
    def encode(self, ex: dict[str, Any]) -> dict[str, Any]:
        """Training ids and labels for one canonical row, with its status (ok / context_truncated / dropped)."""
        return {key: values[0] for key, values in self.encode_batch({k: [v] for k, v in ex.items()}).items()}

    def encode_batch(self, batch: dict[str, list]) -> dict[str, list]:
        """`encode` over a batch of rows (a `datasets` batch): rendered one by one, tokenized in two batched calls
        (prompts, completions), which the fast tokenizers run in parallel; only rows too long are re-tokenized."""
        rows = [dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True)]
        pairs = [split_prompt_completion(self.tokenizer, self.template, self.task.messages(ex)) for ex in rows]
        prompts = self.token_ids_batch([p for p, _ in pairs], is_prompt=True)
        # without the whitespace the template writes after its end-of-turn token
        completions = self.token_ids_batch([self._cut_after_end(c) for _, c in pairs], is_prompt=False)
        out: dict[str, list] = {"input_ids": [], "labels": [], "status": []}
        for ex, p_ids, c_ids in zip(rows, prompts, completions, strict=True):
            for key, value in self._assemble(ex, p_ids, c_ids).items():
                out[key].append(value)
        return out

    def _cut_after_end(self, completion: str) -> str:
        if self.after_end and completion.endswith(self.end_text):
            return completion[:len(completion) - len(self.after_end)]
        return completion

    def _assemble(self, ex: dict[str, Any], p_ids: list[int], c_ids: list[int]) -> dict[str, Any]:
        """Ids and labels from a row's prompt and completion ids; the context cut when the row is too long."""
        status = OK
        if self.max_length is not None and len(p_ids) + len(c_ids) > self.max_length:
            status = TOO_LONG
            if ex["context"]:
                for context in self._context_windows(ex, len(p_ids) + len(c_ids) - self.max_length):
                    prompt, _ = split_prompt_completion(
                        self.tokenizer, self.template, self.task.messages({**ex, "context": context}))
                    p_ids = self.token_ids(prompt, True)
                    if len(p_ids) + len(c_ids) <= self.max_length:
                        status = CONTEXT_TRUNCATED
                        break
        if status == TOO_LONG:
            return {"input_ids": [], "labels": [], "status": TOO_LONG}
        labels = ([-100] * len(p_ids) if self.completion_only_loss else list(p_ids)) + list(c_ids)
        if all(x == -100 for x in labels):
            status = MASKED
        return {"input_ids": p_ids + c_ids, "labels": labels, "status": status}

    def encode_dataset(self, dataset: Dataset, split: str = "train") -> tuple[Dataset, EncodingReport]:
        """Encode a canonical dataset; drop (and count) rows that cannot be trained on. The result is cached by
        content (`genqa.data.encoded_cache`): the same rows, tokenizer, template and settings are tokenized once."""
        return cached_encoding(self, dataset, split, self._encode_dataset, EncodingReport)

    def _encode_dataset(self, dataset: Dataset, split: str) -> tuple[Dataset, EncodingReport]:
        procs = self.num_proc if self.num_proc and self.num_proc > 1 and len(dataset) > 256 else None
        encoded = dataset.map(self.encode_batch, batched=True, batch_size=256, remove_columns=dataset.column_names,
                              desc=f"Tokenizing {split}", load_from_cache_file=False, num_proc=procs)
        statuses = encoded["status"]
        report = EncodingReport(split=split, rows=len(dataset), end_token=self.end_text.strip())
        report.context_truncated = statuses.count(CONTEXT_TRUNCATED)
        report.dropped_too_long = statuses.count(TOO_LONG)
        report.dropped_fully_masked = statuses.count(MASKED)
        kept = encoded.filter(lambda s: s in (OK, CONTEXT_TRUNCATED), input_columns="status").remove_columns("status")
        report.kept = len(kept)
        bos = self.tokenizer.bos_token_id
        n = len(self.end_ids)
        answer_lengths = []
        for ids, labels in zip(kept["input_ids"], kept["labels"], strict=True):
            report.max_tokens = max(report.max_tokens, len(ids))
            trained = [t for t in labels if t != -100]
            answer_lengths.append(len(trained))
            if not self.ends_with_end_token(trained):
                report.rows_missing_end_token += 1
            if bos is not None and len(ids) > 1 and ids[0] == ids[1] == bos:
                report.rows_with_double_bos += 1
        if self.completion_only_loss and answer_lengths:
            self._check_answer_budget(report, answer_lengths)
        if n > 1:
            report.notes.append(f"the end-of-answer text {self.end_text.strip()!r} is {n} tokens for this tokenizer, "
                                "not one special token; generation stops on the text")
        if report.kept == 0 and report.rows:
            report.notes.append("no row survived: raise max_length or shorten the prompts")
        return kept, report

    def _check_answer_budget(self, report: EncodingReport, answer_lengths: list[int]) -> None:
        """Count the trained answers a prediction with the task's budget would cut (generated tasks only): a budget
        below the answers' length shows up as low scores and answers that never stop, not as an error."""
        report.longest_answer_tokens = max(answer_lengths)
        if self.task.scores_labels:
            return
        report.answer_budget = budget = self.task.answer_budget
        report.answers_over_budget = over = sum(1 for n in answer_lengths if n > budget)
        if over:
            report.notes.append(
                f"{over} of {len(answer_lengths)} {report.split} answers are longer than the {budget}-token prediction "
                f"budget (the longest: {report.longest_answer_tokens}, end token included): predictions cut them "
                f"before their end token. Set `max_new_tokens: {report.longest_answer_tokens}` in the recipe (the "
                "prompt's context is cut to leave that room within max_length) or accept the cut.")


def encode_splits(encoder, train_rows: Dataset, eval_rows: Dataset | None, eval_strategy: str, where: str,
                  hint: str = "raise max_length") -> tuple[Dataset, Dataset | None, list[EncodingReport]]:
    """Tokenize the train and validation rows with `encoder` (any object with `encode_dataset`), print their
    reports, and fail clearly when nothing is left to train on or evaluation has no data."""
    from genqa.errors import DataError
    from genqa.messages import say
    from genqa.recipe import RecipeError

    train_ds, report = encoder.encode_dataset(train_rows, "train")
    say(report.summary())
    if report.kept == 0:
        raise DataError(f"{where}: no training row fits; {hint} (see the report above).")
    reports, eval_ds = [report], None
    if eval_rows is not None:
        eval_ds, eval_report = encoder.encode_dataset(eval_rows, "validation")
        reports.append(eval_report)
        say(eval_report.summary())
        eval_ds = eval_ds if len(eval_ds) else None
    if eval_strategy != "no" and eval_ds is None:
        raise RecipeError(f"{where}: eval_strategy={eval_strategy} but there is no validation data; set "
                          "`validation_size` or `eval_split`, or `eval_strategy: 'no'`.")
    return train_ds, eval_ds, reports
