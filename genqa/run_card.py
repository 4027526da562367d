"""The part of a run folder written for people: the model card, the loss plot, the trainer log and the results files.

- `genqa_model_card.md` and `README.md` (the same card with the Hub's YAML header): base model as the recipe names
  it, task, data source and row counts, template, LoRA / QLoRA settings, final losses and task metrics, the merge
  check (merged folders), and the `genqa` commands that use the folder. TRL's own card is a stub for this purpose
  (it names the resolved cache path of the base and links `[None]`), so the trainer's `create_model_card` -- which
  transformers calls at every checkpoint and before a Hub push -- writes genqa's card instead.
- `trainer_log.jsonl`: one JSON line per trainer log event, as it happens (`genqa.trainer_log`).
- `train_results.json` / `eval_results.json` / `all_results.json`: `Trainer.save_metrics`, as the Hugging Face
  example scripts write them.
- `training_loss.png`: train and eval loss, and the `eval_gen_*` task metrics when present (matplotlib).
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers.trainer_callback import PrinterCallback, ProgressCallback

from genqa.files import write_atomic
from genqa.hub_names import BASE_LICENSES, adapter_fingerprint, hub_base, is_hub_id, make_adapter_portable
from genqa.messages import is_main_process, say
from genqa.trainer_log import (
    CleanPrinterCallback,
    CleanProgressCallback,
    RunLogCallback,
    WholeRunTokens,
    run_mean_loss,
    short_value,
)

MODEL_CARD_FILE = "genqa_model_card.md"
HUB_CARD_FILE = "README.md"
LOSS_PLOT_FILE = "training_loss.png"
ALL_RESULTS_FILE = "all_results.json"  # with train_results.json / eval_results.json, named by Trainer.save_metrics
MERGE_REPORT_FILE = "genqa_merge_report.json"

#: task metrics drawn on the plot and shown in the card (counts such as eval_gen_total are left out)
PLOTTED_GEN_METRICS = ("exact", "f1", "accuracy", "valid_rate", "HasAns_f1", "NoAns_f1")


def attach(trainer, qa, sft, model_args, reports: list, backbone) -> None:
    """Before training: log every event to the run folder, and make the trainer's model card genqa's (`backbone`:
    the backbone module, whose name and pipeline tag the card shows)."""
    trainer.add_callback(RunLogCallback(sft.output_dir))
    for library, clean in ((ProgressCallback, CleanProgressCallback), (PrinterCallback, CleanPrinterCallback)):
        if trainer.pop_callback(library) is not None:
            trainer.add_callback(clean)
    trainer.add_callback(WholeRunTokens(trainer))

    def create_model_card(*args, **kwargs) -> None:  # replaces TRL's stub wherever transformers asks for a card
        if trainer.is_world_process_zero():
            write_card(Path(sft.output_dir), qa, sft, model_args, reports_as_dicts(reports),
                       final_metrics(trainer.state.log_history), backbone=backbone)

    trainer.create_model_card = create_model_card


def reports_as_dicts(reports: Iterable) -> list[dict[str, Any]]:
    """Data reports (EncodingReport / WindowReport objects, or their dicts) as plain dicts."""
    return [r if isinstance(r, dict) else r.to_dict() for r in reports]


def final_metrics(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """The last train loss, the trainer's train summary and the last evaluation (eval_* of its step) of a log."""
    out: dict[str, Any] = {}
    for entry in log_history:
        if "loss" in entry:
            out["final_train_loss"] = entry["loss"]
        if "train_runtime" in entry:
            out.update({k: v for k, v in entry.items() if k.startswith("train_") or k == "epoch"})
    evals = [e for e in log_history if any(k.startswith("eval_") for k in e)]
    if evals:
        last_step = evals[-1].get("step")
        for entry in evals:
            if entry.get("step") == last_step:
                out.update({k: v for k, v in entry.items() if k.startswith("eval_")})
    return out


def finish(trainer, qa, sft, model_args, reports: list, backbone) -> dict[str, Any]:
    """After training and saving: the final evaluation (every process), then the results files, the plot and the
    card (main process). Returns the metrics written to `all_results.json`."""
    state = trainer.state
    train = {k: v for k, v in final_metrics(state.log_history).items() if k.startswith("train_") or k == "epoch"}
    mean = run_mean_loss(state.log_history)
    if mean is not None:  # the whole run's, also when the last process trained no step
        train.update(train_loss=mean, epoch=state.epoch)
    evaluated = trainer.eval_dataset is not None and sft.eval_strategy != "no"
    eval_metrics: dict[str, Any] = {}
    if evaluated:
        last = final_metrics(state.log_history)
        at_end = any("eval_loss" in e and e.get("step") == state.global_step for e in state.log_history)
        if at_end and not sft.load_best_model_at_end:
            eval_metrics = {k: v for k, v in last.items() if k.startswith("eval_")}
        else:  # the model now in memory (the best one, with load_best_model_at_end) was not evaluated yet
            eval_metrics = trainer.evaluate()
            trainer.save_state()
    if not trainer.is_world_process_zero():
        return {}
    trainer.save_metrics("train", train)
    if eval_metrics:
        trainer.save_metrics("eval", eval_metrics)
    out = Path(sft.output_dir)
    best = state.best_model_checkpoint if sft.load_best_model_at_end else None
    best_step = int(best.rsplit("-", 1)[1]) if best and best.rsplit("-", 1)[-1].isdigit() else None
    if plot_losses(state.log_history, out / LOSS_PLOT_FILE, best_step):
        say(f"[genqa] loss plot: {out / LOSS_PLOT_FILE}")
    else:
        say(f"[genqa] no loss plot: no loss was logged in {state.global_step} steps (logging every "
            f"{state.logging_steps}); lower logging_steps, or leave it out to log 20 times per run.")
    write_card(out, qa, sft, model_args, reports_as_dicts(reports),
               {**final_metrics(state.log_history), **train, **eval_metrics}, backbone=backbone)
    make_adapter_portable(out, model_args.model_name_or_path)
    mark_stale_merges(out)
    return {**train, **eval_metrics}


# ---- the plot ------------------------------------------------------------------------------------------------------
def gen_metric_names(log_history: list[dict[str, Any]]) -> list[str]:
    """The `eval_gen_*` task metrics a log holds, in `PLOTTED_GEN_METRICS` order."""
    keys = {k for e in log_history for k in e}
    return [f"eval_gen_{m}" for m in PLOTTED_GEN_METRICS if f"eval_gen_{m}" in keys]


def plot_losses(log_history: list[dict[str, Any]], path: Path, best_step: int | None = None) -> bool:
    """Draw train / eval loss (and the task metrics beside them) per step into `path`, with the best checkpoint's
    step marked; False when nothing was logged. Evaluations after the end of training (the final evaluation of the
    model kept) are left out. Uses matplotlib's object API with the Agg canvas: no display, no global backend
    switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ends = [i for i, e in enumerate(log_history) if "train_runtime" in e]
    log_history = log_history[:ends[-1]] if ends else log_history

    def series(key: str) -> tuple[list[int], list[float]]:
        points = [(e["step"], float(e[key])) for e in log_history if isinstance(e.get(key), (int, float))]
        return [p[0] for p in points], [p[1] for p in points]

    gen = gen_metric_names(log_history)
    train, evals = series("loss"), series("eval_loss")
    if not train[0] and not evals[0]:
        return False
    fig = Figure(figsize=(10 if gen else 6.4, 4), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if gen else 1, squeeze=False)[0]
    ax = axes[0]
    if train[0]:
        ax.plot(*train, label="train loss", color="tab:blue", marker="." if len(train[0]) < 30 else None)
    if evals[0]:
        ax.plot(*evals, label="eval loss", color="tab:orange", marker="o")
    ax.set(xlabel="step", ylabel="loss", title="loss")
    for key in gen:
        axes[1].plot(*series(key), marker="o", label=key)
    if gen:
        axes[1].set(xlabel="step", title="task metrics on validation rows (generated)")
        if all(0 <= v <= 1 for key in gen for v in series(key)[1]):  # rates: show them on their full scale
            axes[1].set_ylim(-0.03, 1.03)
    for a in axes:
        if best_step is not None:
            a.axvline(best_step, color="gray", linestyle="--", linewidth=1, label=f"best checkpoint (step {best_step})")
        a.grid(alpha=0.3)
        a.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    write_atomic(path, buf.getvalue())
    return True


# ---- the card ------------------------------------------------------------------------------------------------------
STALE_NOTE = "> **Stale:** the run this model was merged from has trained further since; it is not this model. "


def mark_stale_merges(run: Path) -> list[Path]:
    """Merged folders inside `run` (`RUN/merged`) made from other adapter weights than the run now holds: their cards
    get a warning at the top, and genqa says how to merge again. Returns them."""
    stale, current = [], adapter_fingerprint(run)
    for report_path in sorted(run.glob(f"*/{MERGE_REPORT_FILE}")):
        report = json.loads(report_path.read_text(encoding="utf-8"))
        if report.get("adapter_fingerprint") == current:
            continue
        folder = report_path.parent
        note = f"{STALE_NOTE}Merge again: `genqa merge --adapter {shown_path(run)} --out {shown_path(folder)} " \
               "--overwrite`.\n\n"
        for name in (MODEL_CARD_FILE, HUB_CARD_FILE):
            path = folder / name
            text = path.read_text(encoding="utf-8") if path.is_file() else ""
            if STALE_NOTE not in text:
                head, sep, body = text.partition("\n---\n") if text.startswith("---\n") else ("", "", text)
                write_atomic(path, head + sep + note + body)
        say(f"[genqa] warning: {folder} was merged from an earlier state of this run; its card now says so. "
            f"Merge again: genqa merge --adapter {shown_path(run)} --out {shown_path(folder)} --overwrite")
        stale.append(folder)
    return stale


def _base_note(base: str) -> str:
    """` (`HuggingFaceTB/SmolLM2-135M-Instruct`, dequantized from GGUF Q4_1)` for a packaged or GGUF base."""
    hub_id, how = hub_base(base)
    return f" ({f'`{hub_id}`, ' if hub_id else ''}{how})" if how else ""


def _fine_tuning(model_args) -> str:
    if not model_args.use_peft:
        return "full fine-tuning"
    kind = "QLoRA (4-bit " + str(model_args.bnb_4bit_quant_type).upper() + ")" if model_args.load_in_4bit else "LoRA"
    extra = [x for x, on in (("rsLoRA", model_args.use_rslora), ("DoRA", model_args.use_dora)) if on]
    targets = model_args.lora_target_modules
    targets = ", ".join(targets) if isinstance(targets, list) else targets
    return (f"{kind} r={model_args.lora_r}, alpha={model_args.lora_alpha}, dropout={model_args.lora_dropout}, "
            f"target modules: {targets or 'the model default'}" + (f" ({', '.join(extra)})" if extra else ""))


def _data_lines(qa, reports: list[dict[str, Any]]) -> list[str]:
    source = qa.dataset_path if is_hub_id(qa.dataset_path) else Path(qa.dataset_path or "").name
    lines = [f"- source: `{source}`" + (f" (config {qa.dataset_config})" if qa.dataset_config else "")]
    for r in reports:
        detail = [f"{r.get('kept', r.get('windows', '?'))} {'windows' if 'windows' in r else 'kept'}"]
        for key, what in (("context_truncated", "context truncated"), ("dropped_too_long", "dropped (too long)"),
                          ("dropped_fully_masked", "dropped (nothing trained)"),
                          ("lost_answer_rows", "answer outside every window")):
            if r.get(key):
                detail.append(f"{r[key]} {what}")
        lines.append(f"- {r.get('split', '?')}: {r.get('rows', '?')} rows ({', '.join(detail)})")
    return lines


def _metric_rows(metrics: dict[str, Any]) -> list[str]:
    names = [("final_train_loss", "train loss (last logged)"), ("train_loss", "train loss (mean over the run)"),
             ("eval_loss", "eval loss")]
    names += [(f"eval_gen_{m}", f"{m} on generated answers (eval_gen_{m})") for m in PLOTTED_GEN_METRICS]
    names += [("train_runtime", "training time (s)")]
    return [f"| {label} | {short_value(metrics[key])} |" for key, label in names if isinstance(metrics.get(key),
                                                                                          (int, float))]


def shown_path(folder: Path) -> str:
    """How a card names its folder in commands: relative to the working directory (`runs/my_mcq`), not an absolute
    path, where the folder lies under it."""
    try:
        return str(Path(folder).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def _usage(folder: Path, qa, base: str, merged: bool) -> list[str]:
    data = "TEST_FILE" if not qa.dataset_path else f"YOUR_TEST_FILE{Path(qa.dataset_path).suffix or '.json'}"
    if merged:
        return ["```bash", f"genqa predict --base {folder} --data {data} --out submission.csv", "```"]
    return ["```bash", f"genqa merge --adapter {folder} --out {folder}/merged      # checked against the adapter",
            f"genqa predict --base {folder}/merged --data {data} --out submission.csv",
            f"# or without merging: genqa predict --base {base} --adapter {folder} --data {data} --out submission.csv",
            "```"]


def card_text(folder: Path, qa, sft, model_args, reports: list[dict[str, Any]], metrics: dict[str, Any],
              base: str, backbone: str, merge_report: dict[str, Any] | None = None, final: Path | None = None) -> str:
    """The card's Markdown body (no YAML header); `final` is where the folder ends up (default: `folder`)."""
    merged = merge_report is not None
    shown = final or folder
    named = Path(shown_path(shown))
    title = f"{qa.task} QA, fine-tuned from {base}" + (" (adapter merged)" if merged else "")
    lines = [f"# {shown.name}: {title}", "",
             "Trained with genqa (`genqa train`): prompt -> answer text, response-only loss." +
             (" A tiny model genqa builds offline: a pipeline check, not a useful model." if base.startswith("tiny:")
              else ""), "",
             "| | |", "|---|---|", f"| base model | `{base}`{_base_note(base)} |", f"| task | {qa.task} |",
             f"| backbone | {backbone} |",
             f"| template | {qa.template}{f', system prompt: {qa.system_prompt}' if qa.system_prompt else ''} |",
             f"| fine-tuning | {_fine_tuning(model_args)} |",
             f"| training | max_length {sft.max_length}, learning rate {sft.learning_rate}, batch "
             f"{sft.per_device_train_batch_size} x {sft.gradient_accumulation_steps} accumulation per process, "
             + (f"{sft.max_steps} steps" if sft.max_steps and sft.max_steps > 0 else f"{sft.num_train_epochs} epochs")
             + f", seed {sft.seed} |", "", "## Data", "", *_data_lines(qa, reports), ""]
    rows = _metric_rows(metrics)
    if rows or merged:
        lines += ["## Results", "", "| metric | value |", "|---|---|", *rows]
        if merged and "merged_vs_adapter_max_abs_diff" in merge_report:
            lines.append(f"| merge check: max abs logit difference, merged vs adapter ({merge_report.get('dtype')}) "
                         f"| {merge_report['merged_vs_adapter_max_abs_diff']:.3g} |")
        if merged and "train_time_4bit_vs_merged_max_abs_diff" in merge_report:
            lines.append("| 4-bit training-time model vs merged: max abs logit difference | "
                         f"{merge_report['train_time_4bit_vs_merged_max_abs_diff']:.3g} |")
        lines.append("")
    if (folder / LOSS_PLOT_FILE).is_file():
        lines += [f"![training loss]({LOSS_PLOT_FILE})", ""]
    lines += ["## Use it", "", *_usage(named, qa, base, merged), ""]
    return "\n".join(lines)


def hub_header(qa, model_args, base: str, pipeline_tag: str, merged: bool) -> str:
    """The README's YAML header, written by huggingface_hub's `ModelCardData`: library, base model (a Hub id only,
    never a local or cache path; a packaged or GGUF model's source repository), license of a known base, datasets
    (a Hub dataset only), tags, pipeline."""
    from huggingface_hub import ModelCardData

    hub_id, how = hub_base(base)
    tags = ["genqa", "question-answering", qa.task.replace("_", "-")]
    if model_args.use_peft and not merged:
        tags.append("qlora" if model_args.load_in_4bit else "lora")
    if how:
        tags.append("gguf-dequantized")
    dataset = getattr(qa, "dataset_path", None)
    data = ModelCardData(library_name="peft" if model_args.use_peft and not merged else "transformers",
                         base_model=hub_id, license=BASE_LICENSES.get(hub_id or ""), tags=tags,
                         datasets=[dataset] if dataset and is_hub_id(dataset) else None,
                         pipeline_tag=pipeline_tag)
    return f"---\n{data.to_yaml()}\n---\n"


def write_card(folder: Path, qa, sft, model_args, reports: list[dict[str, Any]], metrics: dict[str, Any],
               backbone, base: str | None = None, merge_report: dict[str, Any] | None = None,
               final: Path | None = None) -> None:
    """Write `genqa_model_card.md` and `README.md` into `folder` (a run folder, or a merged one). `base` is the base
    model as the recipe names it (default: its `model_name_or_path`), `backbone` the module of the one it trains as
    (`genqa.backbones`: its `NAME` and `PIPELINE_TAG`)."""
    base = base or model_args.model_name_or_path
    body = card_text(folder, qa, sft, model_args, reports, metrics, base, backbone.NAME, merge_report, final)
    from huggingface_hub import ModelCard

    header = hub_header(qa, model_args, base, backbone.PIPELINE_TAG, merge_report is not None)
    card = ModelCard(header + body)  # parsed: valid YAML
    write_atomic(folder / MODEL_CARD_FILE, body)
    write_atomic(folder / HUB_CARD_FILE, str(card))


def write_merged_card(folder: Path, final: Path, run: Path, qa, sft, model_args, base: str, backbone,
                      report: dict[str, Any], data_report_file: str) -> None:
    """The card of a merged folder (written into `folder`, named as `final`): the run's data and metrics (read from
    its files) and the merge check."""
    if not is_main_process():
        return
    reports = json.loads((run / data_report_file).read_text(encoding="utf-8")) if (
        run / data_report_file).is_file() else []
    metrics = json.loads((run / ALL_RESULTS_FILE).read_text(encoding="utf-8")) if (
        run / ALL_RESULTS_FILE).is_file() else {}
    if (run / LOSS_PLOT_FILE).is_file():
        shutil.copy2(run / LOSS_PLOT_FILE, folder / LOSS_PLOT_FILE)
    write_card(folder, qa, sft, model_args, reports, metrics, backbone, base=base, merge_report=report,
               final=final)
