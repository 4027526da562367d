"""Export a fine-tuned model to one GGUF file for llama.cpp and Ollama: `genqa export --adapter RUN --out m.gguf`.

With `--adapter` the run is merged first (`genqa merge`, with its check against the adapter) into a temporary folder;
`--model` takes a folder `genqa merge` wrote (or a fully fine-tuned run). The file (`genqa.gguf_file`) holds the
weights in the `--quant` type, the tokenizer, the chat template the run trained with, its end-of-turn token as a stop
token and genqa's metadata (`genqa.base`, `genqa.recipe_sha256`, `genqa.task`). A base that came from a .gguf file
(`pkg:` models) has that file's metadata and tokenizer carried over, only the tensors replaced.

Every export is checked before it is put in place: the file is read back through transformers' GGUF loader (the path
genqa reads `pkg:` models by), it must tokenize the run's validation prompts exactly as the run's tokenizer does, its
logits on those rows must match the merged model's within the quantization's tolerance (max |logit diff| relative to
the largest |logit|, printed), and a handful of rows are answered greedily both ways (identical answers required for
f32, f16, bf16 and q8_0; reported for the 4- and 5-bit types). A failed check leaves no file. Beside the file:
`<name>.Modelfile` for `ollama create` and `<name>.README.md` with how to run both.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genqa.config import flag_at_least
from genqa.errors import report_errors
from genqa.gguf_file import QUANTS, ExportError


def build_parser() -> argparse.ArgumentParser:
    """Command-line options of genqa export."""
    p = argparse.ArgumentParser(prog="genqa export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--adapter", help="Run folder holding a LoRA adapter: merged (and checked) first.")
    src.add_argument("--model", help="A merged folder (`genqa merge --out`) or a fully fine-tuned run folder.")
    p.add_argument("--out", required=True, help="The .gguf file to write (must not exist, or pass --overwrite).")
    p.add_argument("--quant", default="f16", choices=QUANTS,
                   help="Weight type (default f16). These are the types the gguf library writes; K-quants "
                   "(q4_k_m, ...) need llama.cpp's `llama-quantize` on the f16 export.")
    p.add_argument("--check_rows", type=flag_at_least(1), default=4, help="Validation rows the export is checked on.")
    p.add_argument("--tolerance", type=flag_at_least(0, float),
                   help="Max |logit diff| accepted, relative to the largest |logit| (default by --quant).")
    p.add_argument("--overwrite", action="store_true", help="Replace an existing --out (and its Modelfile, README).")
    return p


def outputs(out: Path) -> tuple[Path, Path, Path]:
    """The GGUF file, its Modelfile and its README."""
    stem = out.name.removesuffix(".gguf")
    return out, out.with_name(f"{stem}.Modelfile"), out.with_name(f"{stem}.README.md")


def check_out(args: argparse.Namespace) -> Path:
    """`--out` as a path, refused when it is no .gguf name or would overwrite without --overwrite."""
    from genqa.files import unwritable

    out = Path(args.out)
    if out.suffix != ".gguf":
        raise ExportError(f"--out {out}: name the GGUF file, ending in .gguf (e.g. {out.with_suffix('.gguf')}).")
    if out.is_dir():
        raise ExportError(f"--out {out} is a folder; name the .gguf file to write.")
    problem = next(filter(None, (unwritable(p, folder=False) for p in outputs(out))), None)
    if problem:
        raise ExportError(f"--out: {problem}; give the path of a .gguf file to write (e.g. model.gguf).")
    existing = [str(p) for p in outputs(out) if p.exists()]
    if existing and not args.overwrite:
        raise ExportError(f"{', '.join(existing)} already exist(s); choose another --out or pass --overwrite.")
    return out


@contextlib.contextmanager
def model_folder(args: argparse.Namespace, out: Path) -> Iterator[tuple[Path, str | None]]:
    """(the model folder to export, the merge's base name or None): `--model` as given, or `--adapter` merged with
    genqa's checked merge into a temporary folder beside the output, `.OUT-XXXXXXXX` (removed afterwards, or by the
    next export into `out` when this one is killed)."""
    from genqa.run_dir import RECIPE_FILE

    if args.model:
        folder = Path(args.model)
        if not (folder / "config.json").is_file() or not (folder / RECIPE_FILE).is_file():
            raise ExportError(f"--model {folder}: not a genqa model folder (needs config.json and {RECIPE_FILE}: "
                              "the output of `genqa merge`, or a fully fine-tuned run). For a LoRA run use --adapter.")
        yield folder, None
        return
    run = Path(args.adapter)
    if not (run / "adapter_config.json").is_file():
        hint = (" It holds a complete model: pass it as --model." if (run / "config.json").is_file() else
                " Is this a genqa run folder?")
        raise ExportError(f"--adapter {run}: no adapter_config.json, so there is no adapter to merge.{hint}")
    from genqa.merge import build_parser as merge_parser
    from genqa.merge import merge

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        report = merge(merge_parser().parse_args(["--adapter", str(run), "--out", str(tmp / "merged"),
                                                  "--check_rows", str(args.check_rows)]))
        yield tmp / "merged", report["base"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def source_gguf(base: str | None) -> Path | None:
    """The .gguf file a base model was converted from (`GENQA_GGUF.json` of its converted folder), if any."""
    from genqa.backbones.loading import resolve_model_path

    if not base:
        return None
    record = Path(resolve_model_path(base)) / "GENQA_GGUF.json"
    if not record.is_file():
        return None
    source = Path(json.loads(record.read_text())["source"])
    if not source.is_file():
        raise ExportError(f"the base {base} was converted from {source}, which is gone; its metadata and tokenizer "
                          "are carried over from that file, so restore it (or reinstall its package).")
    return source


def base_of(folder: Path, merged_from: str | None, model_args) -> str | None:
    """The base model name: the merge's, the one a merged folder's report names, or the run's own."""
    from genqa.run_card import MERGE_REPORT_FILE

    if merged_from:
        return merged_from
    report = folder / MERGE_REPORT_FILE
    if report.is_file():
        return json.loads(report.read_text())["base"]
    name = model_args.model_name_or_path
    return None if not name or Path(name).resolve() == folder.resolve() else name


def export(args: argparse.Namespace) -> dict[str, Any]:
    """Merge (for --adapter), write, check and place the GGUF file with its Modelfile and README."""
    out = check_out(args)
    if importlib.util.find_spec("gguf") is None:
        raise ExportError("genqa export writes GGUF with the `gguf` package (llama.cpp's Python library), which is "
                          "not installed: pip install 'genqa[gguf]' (or pip install gguf).")
    from genqa.files import clean_stale_temps
    from genqa.locks import output_lock

    out = out.absolute()
    with output_lock(out.with_name(f".{out.name}.export.lock"), f"--out {args.out}", main_only=False):
        for path in outputs(out):  # what killed exports into `out` left: merge folders, temp GGUF and text files
            clean_stale_temps(path, "export")
        check_out(args)  # again under the lock: another export may have finished meanwhile
        out.parent.mkdir(parents=True, exist_ok=True)
        with model_folder(args, out) as (folder, merged_from):
            return export_folder(folder, merged_from, out, args)


def ollama_modelfile(setup, qa, gguf_name: str, adds_bos: bool) -> str | None:
    """The Modelfile text for the checked GGUF file, or None (with a warning) when the run's chat template has no
    Ollama TEMPLATE equivalent: the GGUF file is kept, since llama.cpp applies the run's own template from it."""
    from genqa.modelfile import ModelfileError, modelfile_text, ollama_template

    try:
        tmpl = ollama_template(setup.encoder.tokenizer, setup.template, qa.system_prompt, setup.encoder.end_text,
                               adds_bos)
        return modelfile_text(gguf_name, tmpl)
    except ModelfileError as err:
        print(f"[genqa] warning: no Modelfile written: {err}", file=sys.stderr)
        return None


def export_folder(folder: Path, merged_from: str | None, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Write `folder`'s model to a temp file beside `out`, check it, then move it (and its companions) into place."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from genqa.data.templates import portable_template
    from genqa.export_check import ExportCheck
    from genqa.files import fsync_dir, fsync_file, temp_file_beside, write_atomic
    from genqa.gguf_file import GGUFContent, architecture, write_gguf
    from genqa.modelfile import readme_text
    from genqa.run_dir import RECIPE_FILE, load_run

    qa, sft, model_args = load_run(folder, ["--use_cpu", "true"])
    architecture(AutoConfig.from_pretrained(folder))  # refused before the model loads
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    setup = ExportCheck.load(folder, qa, sft, args.check_rows)
    base = base_of(folder, merged_from, model_args)
    meta = {"base": base or str(folder), "task": qa.task, "template": qa.template,
            "recipe_sha256": hashlib.sha256((folder / RECIPE_FILE).read_bytes()).hexdigest()}
    content = GGUFContent(portable_template(setup.template), setup.eot_token_id(), meta, source_gguf(base))
    gguf_path, modelfile_path, readme_path = outputs(out)
    tmp = temp_file_beside(gguf_path, ".tmp.gguf")  # unique and exclusive: never a planted link
    try:
        summary = write_gguf(tmp, model, setup.encoder.tokenizer, args.quant, content, folder)
        check = setup.verify(tmp, model, args.quant, args.tolerance)
        fsync_file(tmp)  # on disk before it is put in place
        os.replace(tmp, gguf_path)
        fsync_dir(gguf_path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    report = {"model": args.adapter or str(folder), "base": meta["base"], "task": qa.task, "quant": args.quant,
              **summary, "check": check}
    modelfile = ollama_modelfile(setup, qa, gguf_path.name, check["adds_bos"])
    if modelfile is None:
        modelfile_path.unlink(missing_ok=True)  # an older export's Modelfile would not fit this file
    else:
        write_atomic(modelfile_path, modelfile)
    write_atomic(readme_path, readme_text(gguf_path.name, modelfile_path.name if modelfile else None, report))
    print(f"[genqa] exported {gguf_path} ({args.quant}, {gguf_path.stat().st_size / 2**20:.1f} MiB) with "
          f"{(modelfile_path.name + ' and ') if modelfile else ''}{readme_path.name}")
    return report


def main(argv: list[str] | None = None) -> int:
    """Entry point of `genqa export` (`python -m genqa.export`)."""
    args = build_parser().parse_args(argv)
    return report_errors("genqa.export", lambda: export(args) and 0)


if __name__ == "__main__":
    sys.exit(main())
