"""Fold a trained adapter into its base: `python -m genqa.merge --adapter RUN_DIR --out merged/`.

The base is reloaded in full precision (fp32 or bf16, never 4-bit unless `--merge_into_4bit` is given), the adapter
applied and `merge_and_unload`-ed, and the result saved as safetensors with the tokenizer, chat template, generation
config and the run's recipe. Before saving, the merge is checked on prompts from the run's own validation rows: the
merged model's logits must match the adapter on the full-precision base (max abs difference printed; a mismatch
fails). For QLoRA runs it also prints how far the 4-bit training-time model is from the merged one.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from genqa.config import flag_at_least
from genqa.errors import GenqaError, report_errors

# torch, the recipe parser (TRL) and the run folder (datasets) are imported where used: `genqa merge --help` loads
# none of them.
TOLERANCE = {"float32": 1e-3, "bfloat16": 5e-2, "float16": 2e-2}


class MergeError(GenqaError, RuntimeError):
    """The merged model does not reproduce its adapter."""


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of genqa.merge."""
    p = argparse.ArgumentParser(prog="genqa merge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adapter", required=True, help="Run folder holding the adapter (and genqa_recipe.yaml).")
    p.add_argument("--out", required=True, help="Folder for the merged model (must not exist, or pass --overwrite).")
    p.add_argument("--base", help="Base model (default: the run's model_name_or_path).")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="Precision of the reloaded base and the merged weights.")
    p.add_argument("--check_rows", type=flag_at_least(1), default=4, help="Validation rows used to check the merge.")
    p.add_argument("--tolerance", type=flag_at_least(0, float),
                   help="Max abs logit difference accepted (default by dtype).")
    p.add_argument("--max_shard_size", default="5GB", help="Safetensors shard size.")
    p.add_argument("--merge_into_4bit", action="store_true",
                   help="Merge into the 4-bit quantized base instead (lossy: LoRA deltas get quantized). Only if you "
                   "know you want it.")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing --out folder.")
    p.add_argument("--push_to_hub", metavar="REPO", help="After the checked merge, upload the merged folder (weights, "
                   "tokenizer, recipe, model card) to this Hub model repo (created if missing; needs a login).")
    p.add_argument("--private", action="store_true", help="With --push_to_hub: create the repo private.")
    return p


def check_rows(run_dir: str, qa, n_rows: int) -> list[dict[str, Any]]:
    """The run's first validation rows (its training rows if it kept none): what the merge is checked on."""
    from genqa.data.rows import load_canonical_splits
    from genqa.data.tasks import get_task
    from genqa.run_dir import load_validation_rows

    rows = load_validation_rows(run_dir)
    if rows is None:
        rows, _, _ = load_canonical_splits(qa, get_task(qa))
    return rows.select(range(min(n_rows, len(rows)))).to_list()


def logits_of(model, batch: dict):
    """Float32 logits (QA models: start and end logits stacked) on the padding-free positions."""
    import torch

    from genqa.backbones.loading import model_device

    device = model_device(model)
    with torch.inference_mode():
        out = model(**{k: v.to(device) for k, v in batch.items()})
        if hasattr(out, "start_logits") and getattr(out, "logits", None) is None:
            logits = torch.stack([out.start_logits, out.end_logits], dim=-1)
        else:
            logits = out.logits
        logits = logits.float().cpu()
        mask = batch.get("attention_mask")
        if mask is not None and logits.shape[:2] == mask.shape:
            logits = logits[mask.bool()]
    return logits


def merge(args: argparse.Namespace) -> dict[str, Any]:
    """Merge, check and save; returns the merge report."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from genqa.backbones import auto_class, get_backbone
    from genqa.backbones.loading import (
        apply_adapter,
        detect_backbone,
        ensure_pad_token,
        refuse_adapter_as_base,
        resolve_model_path,
        torch_dtype,
    )
    from genqa.data.tasks import get_task
    from genqa.recipe import RecipeError
    from genqa.run_dir import load_run

    run = Path(args.adapter)
    if not (run / "adapter_config.json").is_file():
        raise RecipeError(f"{run}: no adapter_config.json; nothing to merge (a fully fine-tuned run is already a "
                          "complete model: predict with it directly, "
                          f"`genqa predict --base {run} --data TEST --out OUT.csv`; "
                          "to train an adapter instead, set `use_peft: true` in the recipe).")
    out = Path(args.out)
    qa, sft, model_args = load_run(run, ["--use_cpu", "true"])
    base = args.base or model_args.model_name_or_path
    refuse_adapter_as_base(base)
    backbone = get_backbone(detect_backbone(base, qa.backbone, adapter=run))
    auto = auto_class(backbone)
    dtype = torch_dtype(args.dtype)
    tokenizer = ensure_pad_token(AutoTokenizer.from_pretrained(run))
    batch = backbone.check_batch(get_task(qa), tokenizer, tokenizer.chat_template, sft,
                                 check_rows(str(run), qa, args.check_rows))
    from genqa.hub_names import adapter_fingerprint

    report: dict[str, Any] = {"adapter": str(run), "base": base, "dtype": args.dtype, "check_rows": args.check_rows,
                              "adapter_fingerprint": adapter_fingerprint(run)}

    model = apply_adapter(auto.from_pretrained(resolve_model_path(base, run), dtype=dtype), run, base)
    adapter_logits = logits_of(model.eval(), batch)
    model = model.merge_and_unload()
    merged_logits = logits_of(model.eval(), batch)
    diff = float((merged_logits - adapter_logits).abs().max())
    tol = args.tolerance if args.tolerance is not None else TOLERANCE[args.dtype]
    report["merged_vs_adapter_max_abs_diff"] = diff
    print(f"[genqa] merged vs adapter on the {args.dtype} base: max |logit diff| = {diff:.3g} (tolerance {tol:g})")
    if diff > tol:
        raise MergeError(f"the merged model does not reproduce its adapter (max |logit diff| {diff:.3g} > {tol:g}); "
                         "not saving it.")

    if model_args.load_in_4bit or model_args.load_in_8bit:
        # the base quantized exactly as training loaded it (an extractive span head stays full precision)
        train_args = copy.copy(model_args)
        train_args.model_name_or_path = resolve_model_path(base, run)
        qmodel = PeftModel.from_pretrained(backbone.load_model(train_args), run).eval()
        q_logits = logits_of(qmodel, batch)
        report["train_time_4bit_vs_merged_max_abs_diff"] = float((q_logits - merged_logits).abs().max())
        print("[genqa] quantization error: the 4-bit training-time model differs from the merged model by max "
              f"|logit diff| = {report['train_time_4bit_vs_merged_max_abs_diff']:.3g}")
        if args.merge_into_4bit:
            model = qmodel.merge_and_unload()
            report["merged_into_4bit_vs_adapter_max_abs_diff"] = float(
                (logits_of(model, batch) - adapter_logits).abs().max())
            print("[genqa] warning: merged INTO 4-bit weights as asked: max |logit diff| vs the adapter = "
                  f"{report['merged_into_4bit_vs_adapter_max_abs_diff']:.3g}")
        else:
            del qmodel

    save_merged(model, tokenizer, run, out, args, qa, sft, model_args, report, backbone)
    return report


def check_out_folder(out: Path, run: Path, overwrite: bool) -> None:
    """Refuse an `--out` whose replacement would destroy work: the run folder or a folder holding it, a file or link,
    and (even with `--overwrite`) any folder that is not a merged model genqa wrote (its marker file lists every
    file in it). An empty folder is used as it is."""
    from genqa.run_card import MERGE_REPORT_FILE

    if out.resolve() == run.resolve() or out.resolve() in run.resolve().parents:
        raise MergeError(f"--out {out} is the adapter's run folder {run} or a folder holding it: writing the merged "
                         "model there would delete the run. Choose another --out (e.g. a new folder beside the run).")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise MergeError(f"--out {out} exists and is not a folder (a file or a link); choose another --out.")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise MergeError(f"--out {out} already exists; choose another --out, or pass --overwrite to replace a "
                         "merged model genqa wrote there.")
    try:
        written = set(json.loads((out / MERGE_REPORT_FILE).read_text(encoding="utf-8")).get("files") or ())
    except (OSError, ValueError, AttributeError):
        written = set()
    others = sorted(p.name for p in out.iterdir() if p.name not in written or p.is_dir() or p.is_symlink())
    if not written or others:
        what = f"holds files genqa's merge did not write ({', '.join(others[:5])})" if written else (
            f"is not a merged model written by genqa merge (no readable {MERGE_REPORT_FILE} listing its files)")
        raise MergeError(f"--out {out} {what}: --overwrite only replaces a folder genqa merge wrote, never anything "
                         "else. Nothing was changed; choose another --out, or move that folder away yourself.")


def replace_folder(new: Path, out: Path) -> None:
    """Move the finished folder `new` to `out`; an existing `out` (checked by `check_out_folder`) is first renamed
    aside, so there is never a moment without a complete folder on disk, then deleted."""
    if not out.exists():
        new.rename(out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    out.rename(aside / out.name)
    new.rename(out)
    shutil.rmtree(aside, ignore_errors=True)


def save_merged(model, tokenizer, run: Path, out: Path, args, qa, sft, model_args, report: dict[str, Any],
                backbone) -> None:
    """Write the merged model, tokenizer, recipe and report to a temp folder, then move it into place (`backbone`:
    the backbone module, for the card)."""
    from genqa.files import write_atomic
    from genqa.recipe import dump_recipe, resolved_recipe
    from genqa.run_card import MERGE_REPORT_FILE, write_merged_card
    from genqa.run_dir import CARRIED_FILES, RECIPE_FILE, REPORT_FILE

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model.save_pretrained(tmp, max_shard_size=args.max_shard_size, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        recipe = resolved_recipe(qa, sft, model_args)
        recipe.update(model_name_or_path=str(out), use_peft=False, load_in_4bit=False, load_in_8bit=False,
                      dtype=args.dtype)
        dump_recipe(recipe, tmp / RECIPE_FILE)
        for name in CARRIED_FILES:
            if (run / name).is_file():
                shutil.copy2(run / name, tmp / name)
        write_merged_card(tmp, out, run, qa, sft, model_args, report["base"], backbone, report, REPORT_FILE)
        # the marker, written last: it lists what this merge wrote, so --overwrite can tell the folder is only that
        files = sorted([p.name for p in tmp.iterdir()] + [MERGE_REPORT_FILE])
        write_atomic(tmp / MERGE_REPORT_FILE, json.dumps({**report, "files": files}, indent=2))
        replace_folder(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"[genqa] merged model saved to {out}")


def push_to_hub(folder: Path, repo: str, private: bool = False) -> str:
    """Upload a merged folder to a Hub model repo with huggingface_hub's own `create_repo` + `upload_folder`;
    returns the commit URL. A failure (offline, no login, no rights) is a user error: the merged folder stays."""
    from huggingface_hub import create_repo, upload_folder

    try:
        create_repo(repo, repo_type="model", private=private, exist_ok=True)
        url = upload_folder(repo_id=repo, folder_path=str(folder), repo_type="model",
                            commit_message="genqa merge: merged model, tokenizer, recipe and model card")
    except Exception as err:  # noqa: BLE001 - hub errors come in many types; the message is what matters
        raise MergeError(f"--push_to_hub {repo}: the upload failed ({type(err).__name__}: {err}). The merged model is "
                         f"saved in {folder}; upload it later with `huggingface-cli upload {repo} {folder}`.") from err
    print(f"[genqa] pushed {folder} to {repo}")
    return str(url)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m genqa.merge`."""
    args = build_parser().parse_args(argv)

    def run() -> int:
        from genqa.files import clean_stale_temps, unwritable
        from genqa.locks import output_lock

        out, adapter = Path(args.out).absolute(), Path(args.adapter)
        problem = unwritable(out, folder=True)
        if problem:
            raise MergeError(f"--out: {problem}; give a folder for the merged model (e.g. merged/).")
        check_out_folder(out, adapter, args.overwrite)
        out = out.resolve()  # a name for the lock and the temp folders even for `--out .`
        with output_lock(out.with_name(f".{out.name}.merge.lock"), f"--out {args.out}", main_only=False):
            clean_stale_temps(out, "merge")
            check_out_folder(out, adapter, args.overwrite)
            merge(args)
        print(f"[genqa] next: genqa predict --base {args.out} --data YOUR_TEST_FILE --out submission.csv")
        if args.push_to_hub:
            push_to_hub(Path(args.out), args.push_to_hub, args.private)
        return 0

    return report_errors("genqa.merge", run)


if __name__ == "__main__":
    sys.exit(main())
