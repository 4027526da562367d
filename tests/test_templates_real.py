"""Response-only labels and the data report on real templates through a real tokenizer (SmolLM2's byte-level BPE).

Every shipped template, SmolLM2's own ChatML template (`template: tokenizer`), and the real Llama-3 and Qwen2.5 chat
templates (tests/fixtures/templates) run through SmolLM2's tokenizer: the trained tokens of a collated batch decode to
the answer plus the end-of-turn text, never the newline some templates write after it, and the report says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import smollm2
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from genqa.config import QAArguments
from genqa.data.encoding import PromptEncoder
from genqa.data.tasks import get_task
from genqa.data.templates import load_template

FIXTURES = Path(__file__).parent / "fixtures" / "templates"
# template -> the end-of-turn text SmolLM2's tokenizer gets (eos_token is <|im_end|> for the eos-based templates)
CASES = {"alpaca": "<|im_end|>", "alpaca_zh": "<|im_end|>", "llama2": "<|im_end|>", "chatml": "<|im_end|>",
         "llama3": "<|eot_id|>", "tokenizer": "<|im_end|>", str(FIXTURES / "llama3_meta.jinja"): "<|eot_id|>",
         str(FIXTURES / "qwen2_5.jinja"): "<|im_end|>"}
ROWS = [  # an answer ending in punctuation (it can merge with a multi-token end text), a no-answer row, Vietnamese
    {"id": "a", "context": "The bridge over the Tam river was finished in 1902 by local masons.",
     "question": "Who finished the bridge?", "answers": ["local masons."], "answer_starts": [55]},
    {"id": "b", "context": "The bridge is made of stone.", "question": "How long is it?", "answers": [],
     "answer_starts": []},
    {"id": "c", "context": "Cây cầu được xây năm 1902.", "question": "Cây cầu được xây năm nào?",
     "answers": ["1902"], "answer_starts": [21]},
]


@pytest.fixture(scope="module")
def tok():
    return smollm2.tokenizer()


def _rows():
    return [dict(r, options=[], label=-1) for r in ROWS]


def _encoder(tok, template: str) -> PromptEncoder:
    task = get_task(QAArguments(task="extractive", template=template))
    return PromptEncoder(task, tok, load_template(template, tok), max_length=512)


@pytest.mark.parametrize("template", list(CASES), ids=lambda t: Path(t).stem)
def test_trained_tokens_of_a_collated_batch(template, tok):
    from datasets import Dataset

    encoder = _encoder(tok, template)
    assert encoder.end_text.strip() == CASES[template]
    ds, report = encoder.encode_dataset(Dataset.from_list(_rows()))
    assert report.kept == 3 and report.rows_missing_end_token == 0, report.summary()
    assert "NO" not in report.summary()
    batch = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id)(ds.to_list())
    for i, row in enumerate(ROWS):
        trained = [t for t in batch["labels"][i].tolist() if t != -100]
        target = row["answers"][0] if row["answers"] else "unanswerable"
        assert tok.decode(trained, skip_special_tokens=False) == target + CASES[template]
        # the row ends at the end-of-turn text: nothing the template writes after it is trained or even fed
        ids = ds[i]["input_ids"]
        assert tok.decode(ids, skip_special_tokens=False).endswith(CASES[template])
        assert ids[-len(trained):] == trained


@pytest.mark.parametrize("template", ["tokenizer", str(FIXTURES / "qwen2_5.jinja")], ids=["smollm2", "qwen2_5"])
def test_newline_after_end_token_is_not_trained(template, tok):
    encoder = _encoder(tok, template)
    assert encoder.end_text == "<|im_end|>\n" and encoder.after_end == "\n"
    enc = encoder.encode(_rows()[0])
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    assert enc["labels"][-1] == tok.convert_tokens_to_ids("<|im_end|>") and enc["input_ids"][-len(nl):] != nl


@pytest.mark.parametrize("template", ["tokenizer", "llama3"])
def test_report_has_no_false_yes(template, tok):
    """Trained tokens that lack the end text are reported, whatever whitespace follows; trailing whitespace after a
    trained end text does not hide it."""
    encoder = _encoder(tok, template)
    answer = tok("local masons.", add_special_tokens=False)["input_ids"]
    end = tok(encoder.end_text.strip(), add_special_tokens=False)["input_ids"]
    nl = tok("\n", add_special_tokens=False)["input_ids"]
    assert encoder.ends_with_end_token(answer + end)
    assert encoder.ends_with_end_token(answer + end + nl)
    assert not encoder.ends_with_end_token(answer)
    assert not encoder.ends_with_end_token(answer + nl)
    assert not encoder.ends_with_end_token(answer + end[:-1])


def test_multi_token_end_text_is_noted_and_stops_as_text(tok):
    from genqa.backbones.generation import stop_token_ids

    encoder = _encoder(tok, "llama3")  # <|eot_id|> is no special token of SmolLM2's vocabulary
    assert len(encoder.end_ids) > 1 and stop_token_ids(encoder) == [tok.eos_token_id]
    chatml = _encoder(tok, "tokenizer")
    assert chatml.end_ids == [tok.convert_tokens_to_ids("<|im_end|>")]
    assert stop_token_ids(chatml) == [tok.eos_token_id]
