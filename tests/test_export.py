"""`genqa export`: a tiny run written as GGUF (f16, q8_0), read back and checked, with its Ollama Modelfile; a base
that came from a .gguf file (Llama, Gemma 3) has its metadata carried over; every refusal leaves no file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from test_merge_generate import _train, mcq_run  # noqa: F401  (the tiny MCQ run, trained once per module)

from genqa.data.templates import load_template, portable_template
from genqa.export import main as export_main
from genqa.sft import main as sft_main

gguf = pytest.importorskip("gguf")


def _fields(path: Path) -> dict:
    reader = gguf.GGUFReader(str(path))
    return {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}


def _tensor_types(path: Path) -> set[str]:
    return {t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_export_round_trip(mcq_run, tmp_path, capsys, quant):  # noqa: F811
    out = tmp_path / "exp" / "tiny.gguf"
    assert export_main(["--adapter", str(mcq_run), "--out", str(out), "--quant", quant]) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.Modelfile", "tiny.README.md", "tiny.gguf"]
    printed = capsys.readouterr().out
    diff = float(re.search(rf"GGUF \({quant}\) vs merged model .*max \|logit diff\| = (\S+)", printed).group(1))
    assert 0 < diff < (0.02 if quant == "f16" else 0.5)
    assert re.search(r"greedy answers identical on (\d+)/\1 rows", printed)
    meta = _fields(out)
    assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "gpt2"
    trained = (mcq_run / "chat_template.jinja").read_text()
    assert meta["tokenizer.chat_template"] == portable_template(trained) and "{% generation" not in meta[
        "tokenizer.chat_template"]  # transformers' extension, which llama.cpp's Jinja engines do not know
    assert meta["tokenizer.ggml.tokens"][meta["tokenizer.ggml.eot_token_id"]] == "</s>"  # llama2's end of turn
    assert meta["genqa.base"] == "tiny:llama" and meta["genqa.task"] == "mcq" and len(meta["genqa.recipe_sha256"]) == 64
    assert _tensor_types(out) == {"F32", quant.upper()}  # norms stay F32
    readme = (out.parent / "tiny.README.md").read_text()
    assert "ollama create tiny -f tiny.Modelfile" in readme and "llama-cli -m tiny.gguf" in readme


def test_export_of_an_older_run_with_generation_tags(mcq_run, tmp_path):  # noqa: F811
    """A run folder saved before genqa wrote portable templates (with `{% generation %}` tags) exports a file whose
    template plain Jinja2 renders (the check would refuse it otherwise)."""
    import shutil

    run = tmp_path / "old_run"
    shutil.copytree(mcq_run, run)
    (run / "chat_template.jinja").write_text(load_template("llama2"))
    out = tmp_path / "old.gguf"
    assert export_main(["--adapter", str(run), "--out", str(out), "--quant", "f16"]) == 0
    assert _fields(out)["tokenizer.chat_template"] == portable_template(load_template("llama2"))


def test_modelfile_sends_genqa_prompt(mcq_run, tmp_path):  # noqa: F811
    """Filled as Ollama fills it, the Modelfile's TEMPLATE is exactly the prompt `genqa predict` sends."""
    from transformers import AutoTokenizer

    from genqa.data.encoding import PromptEncoder
    from genqa.data.tasks import get_task
    from genqa.run_dir import load_run, load_validation_rows

    out = tmp_path / "m.gguf"
    assert export_main(["--adapter", str(mcq_run), "--out", str(out)]) == 0
    text = (tmp_path / "m.Modelfile").read_text()
    assert text.startswith("FROM ./m.gguf\n") and 'PARAMETER stop "</s>"' in text
    template = re.search(r'TEMPLATE """(.*?)"""', text, re.S).group(1)
    system = re.search(r'SYSTEM """(.*?)"""', text, re.S).group(1)
    qa, sft, _ = load_run(mcq_run)
    assert system == qa.system_prompt
    task, tokenizer = get_task(qa), AutoTokenizer.from_pretrained(mcq_run)
    encoder = PromptEncoder(task, tokenizer, tokenizer.chat_template, sft.max_length)
    row = load_validation_rows(mcq_run)[0]
    filled = template.replace("{{ .System }}", system).replace("{{ .Prompt }}", task.user_content(row))
    assert filled == encoder.prompt_text(row)  # the llama2 template writes <s>; the file does not add BOS itself
    assert _fields(out)["tokenizer.ggml.add_bos_token"] is False


def test_export_refusals_leave_no_file(mcq_run, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "x.gguf"
    with pytest.raises(SystemExit) as exit_info:  # a quantization gguf cannot write, a wrong flag
        export_main(["--adapter", str(mcq_run), "--out", str(out), "--quant", "q4_k_m"])
    assert exit_info.value.code == 2 and "invalid choice: 'q4_k_m'" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # neither --adapter nor --model
        export_main(["--out", str(out)])
    assert "one of the arguments --adapter --model is required" in capsys.readouterr().err

    assert export_main(["--adapter", str(tmp_path), "--out", str(out)]) == 2
    assert "no adapter_config.json, so there is no adapter to merge" in capsys.readouterr().err
    assert export_main(["--model", str(tmp_path), "--out", str(out)]) == 2
    assert "not a genqa model folder" in capsys.readouterr().err
    assert export_main(["--adapter", str(mcq_run), "--out", str(tmp_path / "x.bin")]) == 2
    assert "ending in .gguf" in capsys.readouterr().err
    # the check fails (nothing is within a zero tolerance): no file, no temp file, no merge folder left
    assert export_main(["--adapter", str(mcq_run), "--out", str(out), "--tolerance", "0"]) == 2
    assert "does not reproduce the model" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

    out.write_text("mine")  # never overwritten silently
    assert export_main(["--adapter", str(mcq_run), "--out", str(out)]) == 2
    assert "already exist" in capsys.readouterr().err and out.read_text() == "mine"


def test_export_refuses_an_architecture_it_cannot_write(mcq_run, tmp_path, capsys):  # noqa: F811
    import shutil

    from genqa.backbones.tiny import build

    folder = tmp_path / "t5"
    shutil.copytree(build("tiny:t5"), folder)
    shutil.copy(mcq_run / "genqa_recipe.yaml", folder)
    assert export_main(["--model", str(folder), "--out", str(tmp_path / "t5.gguf")]) == 2
    err = capsys.readouterr().err
    assert "cannot export a T5ForConditionalGeneration model" in err and "Traceback" not in err
    assert not (tmp_path / "t5.gguf").exists()


def _tiny_gemma3_gguf(path: Path) -> None:
    """A tiny Gemma 3 GGUF file as llama.cpp's converter writes one: sentencepiece vocabulary (`llama` tokenizer
    model, byte fallback tokens), 7 layers of sliding and full attention, heads of 256 as google/gemma-3-270m's,
    non-zero norm weights (so Gemma's `1 + w` storage is exercised)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from genqa.backbones.tiny import _corpus
    from genqa.gguf_file import add_tensors, write_architecture

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    chars = sorted({c for line in _corpus() for c in line.replace(" ", "")})
    words = sorted({w for line in _corpus() for w in line.split() if len(w) < 8})[:300]
    pieces = [p for p in dict.fromkeys(["\u2581", *chars, *("\u2581" + w for w in words)]) if p not in specials]
    tokens = specials + [f"<0x{i:02X}>" for i in range(256)] + pieces
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    config = Gemma3TextConfig(vocab_size=len(tokens), hidden_size=64, intermediate_size=128, num_hidden_layers=7,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=256, sliding_window=8,
                              rope_parameters={"sliding_attention": rope, "full_attention": dict(rope)},
                              bos_token_id=2, eos_token_id=1, pad_token_id=0)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0, 0.3)
    writer = gguf.GGUFWriter(str(path), "gemma3")
    write_architecture(writer, "gemma3", config)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL] * len(specials) + [gguf.TokenType.BYTE] * 256
                           + [gguf.TokenType.NORMAL] * len(pieces))
    writer.add_token_scores([0.0] * (len(specials) + 256) + [-float(i) for i in range(len(pieces))])
    for kind, token_id in {"pad": 0, "eos": 1, "bos": 2, "unk": 3}.items():
        getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(True)
    add_tensors(writer, model, "gemma3", gguf.GGMLQuantizationType.F32, None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_export_carries_a_gguf_base_over(tmp_path, arch, capsys, monkeypatch):
    """A run whose base came from a .gguf (as `pkg:` models do) is exported with that file's metadata and tensor
    names, only the tensors replaced; the round trip check passes (Llama's Q/K permutation, Gemma's norms)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genqa.backbones.tiny import build
    from genqa.gguf_file import REPLACED_KEYS, GGUFContent, write_gguf

    source = tmp_path / f"{arch}-source.gguf"
    if arch == "llama":  # genqa's own writer makes the source: gpt2 vocabulary, llama.cpp's Q/K order
        folder = Path(build("tiny:llama"))
        write_gguf(source, AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder), "f32",
                   GGUFContent("{{ messages }}", None), folder)
    else:
        _tiny_gemma3_gguf(source)
    monkeypatch.setenv("GENQA_CACHE", str(tmp_path / "cache"))  # the base converted from the source lands here
    run = tmp_path / "run"
    assert sft_main(["recipes/tiny/mcq.yaml", "--model_name_or_path", str(source), "--output_dir", str(run),
                     "--max_steps", "4", "--save_strategy", "no"]) == 0
    out = tmp_path / "out.gguf"
    assert export_main(["--adapter", str(run), "--out", str(out), "--quant", "f16"]) == 0
    assert "greedy answers identical" in capsys.readouterr().out
    before, after = _fields(source), _fields(out)
    carried = {k: v for k, v in before.items() if k not in REPLACED_KEYS}
    assert {k: after[k] for k in carried} == carried  # every source key kept, tokenizer included
    assert after["genqa.base"] == str(source) and after["general.file_type"] == 1
    assert {t.name for t in gguf.GGUFReader(str(out)).tensors} == {t.name for t in gguf.GGUFReader(str(source)).tensors}


def test_export_of_a_merged_folder(mcq_run, tmp_path):  # noqa: F811
    """`--model` takes what `genqa merge` wrote; the base is read from its merge report."""
    from genqa.merge import main as merge_main

    assert merge_main(["--adapter", str(mcq_run), "--out", str(tmp_path / "merged")]) == 0
    out = tmp_path / "m.gguf"
    victim = tmp_path / "victim"
    victim.write_text("precious")
    out.with_name(f".{out.stem}.{os.getpid()}.tmp.gguf").symlink_to(victim)  # the temp name export used to write
    assert export_main(["--model", str(tmp_path / "merged"), "--out", str(out), "--quant", "q8_0"]) == 0
    assert victim.read_text() == "precious" and not out.is_symlink()
    meta = _fields(out)
    assert meta["genqa.base"] == "tiny:llama" and meta["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q8_0)


def test_export_refuses_a_gemma3_it_cannot_describe(mcq_run, tmp_path, capsys):  # noqa: F811
    """tiny:gemma3 (soft-capped logits, its own layer pattern) has no GGUF metadata of its own to carry over, and
    what genqa would write from scratch would read back as another model: refused, nothing written."""
    import shutil

    from genqa.backbones.tiny import build

    folder = tmp_path / "g3"
    shutil.copytree(build("tiny:gemma3"), folder)
    shutil.copy(mcq_run / "genqa_recipe.yaml", folder)
    assert export_main(["--model", str(folder), "--out", str(tmp_path / "g3.gguf")]) == 2
    err = capsys.readouterr().err
    assert "final_logit_softcapping" in err and "came from a .gguf file" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g3"]


def test_export_cleans_what_killed_exports_left_under_its_lock(tmp_path, capsys):
    """A killed export leaves `.OUT-XXXXXXXX/merged` and `.OUT.XXXXXXXX.tmp.gguf` beside `--out`: the next export into
    the same `--out` removes them (under its lock); another export's names and a link are left alone."""
    from genqa.locks import output_lock

    out = tmp_path / "m.gguf"
    left = [tmp_path / ".m.gguf-ab12cd34", tmp_path / ".m.gguf.x9_k2m0q.tmp.gguf",
            tmp_path / ".m.Modelfile.abcd1234.tmp"]
    (left[0] / "merged").mkdir(parents=True)
    for f in left[1:]:
        f.write_text("partial")
    keep = [tmp_path / ".other.gguf-ab12cd34", tmp_path / ".m.gguf.notours.tmp.gguf"]
    keep[0].mkdir()
    keep[1].write_text("x")
    (tmp_path / ".m.gguf.zz12cd34.tmp.gguf").symlink_to(keep[1])
    with output_lock(tmp_path / ".m.gguf.export.lock", "--out m.gguf", main_only=False):  # an export in progress
        assert export_main(["--model", str(tmp_path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is being written by" in err and "Traceback" not in err and all(p.exists() for p in left)
    assert export_main(["--model", str(tmp_path), "--out", str(out)]) == 2  # not a model folder: after the cleaning
    assert not any(p.exists() for p in left) and all(p.exists() for p in keep)
    assert "left by an export into" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["afile/x.gguf", "afile/deeper/x.gguf"])
def test_export_out_under_a_file_is_refused_clearly(tmp_path, capsys, where):
    (tmp_path / "afile").write_text("mine")
    assert export_main(["--model", str(tmp_path), "--out", str(tmp_path / where)]) == 2
    err = capsys.readouterr().err
    assert "afile is a file" in err and "Traceback" not in err and (tmp_path / "afile").read_text() == "mine"


def test_export_keeps_the_checked_gguf_when_no_modelfile_fits(mcq_run, tmp_path, capsys, monkeypatch):  # noqa: F811
    """A chat template with no Ollama TEMPLATE equivalent: the checked GGUF (fsynced before it is placed) is kept for
    llama.cpp, the Modelfile skipped with a warning; no merge folder and no `next: predict` for a deleted folder."""
    import genqa.files
    import genqa.modelfile
    from genqa.modelfile import ModelfileError

    def no_template(*args, **kwargs):
        raise ModelfileError("no Ollama TEMPLATE equivalent")

    synced = []
    real_fsync = genqa.files.fsync_file
    monkeypatch.setattr(genqa.modelfile, "ollama_template", no_template)
    monkeypatch.setattr(genqa.files, "fsync_file", lambda p: synced.append(Path(p).name) or real_fsync(p))
    out = tmp_path / "m.gguf"
    assert export_main(["--adapter", str(mcq_run), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "warning: no Modelfile written: no Ollama TEMPLATE equivalent" in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.README.md", "m.gguf"]
    assert "No Modelfile" in (tmp_path / "m.README.md").read_text() and _fields(out)["genqa.task"] == "mcq"
    assert len(synced) == 1 and synced[0].startswith(".m.gguf.") and synced[0].endswith(".tmp.gguf")
    assert "next: genqa predict" not in captured.out


def test_gguf_writer_is_closed_when_the_write_fails(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import genqa.gguf_file
    from genqa.gguf_file import GGUFContent, write_gguf

    closed = []
    real_close = gguf.GGUFWriter.close
    monkeypatch.setattr(gguf.GGUFWriter, "close", lambda self: closed.append(self.fout is not None) or real_close(self))

    def disk_full(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", disk_full)
    for name in ("write_architecture", "write_bpe_tokenizer"):
        monkeypatch.setattr(genqa.gguf_file, name, lambda *a, **k: None)
    monkeypatch.setattr(genqa.gguf_file, "add_tensors", lambda *a, **k: {})
    config = SimpleNamespace(architectures=["LlamaForCausalLM"], model_type="llama")
    embeddings = SimpleNamespace(weight=torch.zeros(8, 2))
    model = SimpleNamespace(config=config, get_input_embeddings=lambda: embeddings)
    with pytest.raises(OSError, match="No space left"):
        write_gguf(tmp_path / "x.gguf", model, None, "f16", GGUFContent("", None, {}, None), tmp_path)
    assert closed == [True]  # the open file was closed
