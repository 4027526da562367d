"""Layout-constrained decoding for MCQ generation (`genqa.backbones.mcq_constraint`)."""

from __future__ import annotations

import pytest
import torch

from genqa.backbones.mcq_constraint import COMPLETE, INVALID, OPEN, MCQLayoutProcessor, locate, segments
from genqa.data.mcq_format import MCQLayout, parse_mcq

LABELS = ("A", "B", "C", "D")
VI = MCQLayout(LABELS, "Câu hỏi:", "Đáp án:")
GOOD = "Câu hỏi: Cầu được xây năm nào?\nA. 1902.\nB. 1920.\nC. 1890\nD. Năm 1945\nĐáp án: A"


def status(text: str, layout: MCQLayout = VI) -> str:
    return locate(segments(layout), text.encode()).status


def test_locate_reads_the_layout():
    assert status(GOOD) == COMPLETE
    assert status(GOOD.replace("B. 1920.", "B. Anh A, ông C và anh D.")) == COMPLETE  # people named by letter
    for cut in range(len(GOOD.encode()) - 1):  # every byte prefix is on the way (a cut character too)
        assert locate(segments(VI), GOOD.encode()[:cut]).status == OPEN
    assert locate(segments(VI), b"C\xc3").due == ["Câu hỏi:".encode()[2:]]  # inside a fixed piece: what is due
    assert sorted(locate(segments(VI), GOOD.encode()[:-1]).due) == [b"A", b"B", b"C", b"D"]
    english = MCQLayout(LABELS, "Question:", "Answer:")
    assert status("Question: Why?\nA. a\nB. b\nC. c\nD. d\nAnswer: D", english) == COMPLETE


@pytest.mark.parametrize(("bad", "parser_refuses"), [
    (GOOD.replace("B. 1920.", "B. 1902"), True),            # option B equals A up to the final period
    (GOOD.replace("C. 1890", "C. NĂM 1945"), True),          # option C equals D up to case
    (GOOD.replace("B. 1920.", "B.  "), True),                # an empty option
    (GOOD.replace("Câu hỏi: Cầu được xây năm nào?", "Câu hỏi: "), True),  # an empty question
    (GOOD[:-1] + "E", True),                                 # a key that is not a label
    ("Question: " + GOOD[9:], True),                         # the wrong question prefix
    (GOOD.replace("\nB.", "\nE."), True),                    # a label out of order
    (GOOD.replace("B. 1920.", "B. 1920. C. 1920. D. 1920."), True),  # the next options written inline
    (GOOD.replace("B. 1920.", "B. B. 1920"), True),          # a label repeated at the start of the line
    (GOOD.replace("B. 1920.", "B. 1902. 30."), False),        # option B holds option A (a near-copy)
    (GOOD.replace("B. 1920.", "B. 190"), False),              # option B sits inside option A
    (GOOD.replace("\nB.", "\n\nB."), False),                 # a blank line (the parser skips it)
    (GOOD + ". Vì năm 1902", False),                         # text after the key (the parser ignores it)
])
def test_locate_refuses_what_breaks_the_layout(bad, parser_refuses):
    assert status(bad) == INVALID
    assert parse_mcq(bad, LABELS, VI.question_prefix, VI.answer_prefix).ok is not parser_refuses


def test_an_option_line_holding_an_earlier_option_is_refused_at_once():
    """Every continuation of a line that already holds an earlier option would hold it too: refused before the line
    ends, so the model is turned aside at the token that completes the copy."""
    head = "Câu hỏi: Năm nào?\nA. Sản xuất.\nB. "
    assert status(head + "Sản xu") == OPEN
    assert status(head + "Sản xuất") == INVALID
    assert status(head + "sản  XUẤT hàng") == INVALID             # under the parser's comparison (case, spacing)
    assert status(head + "Sản\n") == INVALID                      # ending inside option A
    assert status(head + "Sản lượng\nC. ") == OPEN


def _greedy(processor: MCQLayoutProcessor, prefers, steps: int = 120) -> list[int]:
    """Greedy decoding of a scripted 'model': `prefers(step)` gives the logits it would emit."""
    ids: list[int] = []
    for step in range(steps):
        scores = processor(torch.tensor([[0] + ids]), prefers(step).unsqueeze(0))  # token 0: the "prompt"
        token = int(scores[0].argmax())
        ids.append(token)
        if token in processor.end_ids:
            break
    return ids


@pytest.mark.parametrize("wants", [
    "Câu hỏi: Năm nào?\nA. 1902\nB. 1902\nC. 1902\nD. 1902\nĐáp án: E và nhiều nữa",   # copies, a bad key
    "Câu hỏi: Năm nào?\nA. 1902\nB. 1902. C. 1902. D. 1902.\nĐáp án: B",                # options inline
])
def test_a_copying_model_is_held_to_the_layout(tiny_tokenizer, wants):
    """The 'model' wants to copy one option into the others (line by line, or inline on one line) and key a label
    outside the options: under the constraint it writes four distinct options, a label and the end token."""
    tok = tiny_tokenizer
    script = tok(wants, add_special_tokens=False)["input_ids"]
    newline = tok("\n", add_special_tokens=False)["input_ids"][-1]
    end = tok.eos_token_id
    noise = torch.randn(len(tok), generator=torch.Generator().manual_seed(0))

    def prefers(step: int) -> torch.Tensor:
        scores = noise.clone()
        scores[newline] += 5.0  # second choice everywhere: lines end as soon as they may
        if step < len(script):
            scores[script[step]] += 10.0
        return scores

    processor = MCQLayoutProcessor(tok, VI, prompt_length=1, end_ids=[end])
    ids = _greedy(processor, prefers)
    assert ids[-1] == end
    text = tok.decode(ids[:-1])
    parsed = parse_mcq(text, LABELS, VI.question_prefix, VI.answer_prefix)
    assert parsed.ok, (text, parsed.errors)
    assert parsed.options[0] == "1902" and len(set(parsed.options)) == 4
    keys = [o.casefold().rstrip(".") for o in parsed.options]
    assert not any(a != b and a in b for a in keys for b in keys), text  # no option inside another either


def _scripted(tok, wants: str):
    """Logits of a 'model' that writes `wants` (then prefers ending lines and the end token)."""
    script = tok(wants, add_special_tokens=False)["input_ids"]
    newline = tok("\n", add_special_tokens=False)["input_ids"][-1]
    noise = torch.randn(len(tok), generator=torch.Generator().manual_seed(0))

    def prefers(step: int) -> torch.Tensor:
        scores = noise.clone()
        scores[[newline, tok.eos_token_id]] += 5.0
        if step < len(script):
            scores[script[step]] += 10.0
        return scores
    return prefers


@pytest.mark.parametrize("context", [
    "Giải thích: năm 1890 cầu được khánh thành.",          # the model keys A; only option C is in the context
    "Giải thích: 1920 hay năm 1945.",                      # B and D are
    "Giải thích: cầu được khánh thành vào mùa xuân.",      # none of the model's options is
    "Giải thích: 1902, 1920, 1890 hay năm 1945.",          # all are
])
def test_key_from_context_holds_the_key_to_an_option_the_context_contains(tiny_tokenizer, context):
    """The key always names an option the context contains: the model's likeliest of those it wrote, or, where
    none of the options before the row's hold position is in the context, the option held to it there."""
    import zlib

    from genqa.scoring.metrics import normalize_answer

    tok = tiny_tokenizer
    prefers = _scripted(tok, GOOD)  # options 1902. / 1920. / 1890 / Năm 1945, keyed A

    def ranked(step: int) -> torch.Tensor:  # among the labels, the 'model' likes A > B > C > D
        scores = prefers(step)
        for rank, label in enumerate(LABELS):
            scores[tok(f" {label}", add_special_tokens=False)["input_ids"][0]] += 1.0 - rank / 10
        return scores

    processor = MCQLayoutProcessor(tok, VI, prompt_length=1, end_ids=[tok.eos_token_id], contexts=[context],
                                   lang="vi")
    ids = _greedy(processor, ranked, steps=200)
    text = tok.decode(ids[:-1])
    parsed = parse_mcq(text, LABELS, VI.question_prefix, VI.answer_prefix)
    assert parsed.ok, (text, parsed.errors)
    ctx = normalize_answer(context, "vi")
    found = [normalize_answer(o, "vi") in ctx for o in parsed.options]
    assert found[parsed.answer_index], text
    scripted = ["1902", "1920", "1890", "Năm 1945"]
    hold = zlib.crc32(context.encode()) % len(LABELS)
    grounded_before = [normalize_answer(o, "vi") in ctx for o in scripted[:hold]]
    assert [o.rstrip(".") for o in parsed.options[:hold]] == scripted[:hold]  # the model's own, up to the hold
    if any(grounded_before):  # an option the model wrote: nothing held, the key its likeliest grounded one
        assert [o.rstrip(".") for o in parsed.options] == scripted
        assert parsed.answer_index == found.index(True)
    else:
        assert found[hold], text
    keys = [o.casefold().rstrip(".") for o in parsed.options]
    assert not any(a != b and a in b for a in keys for b in keys), text



def test_generation_with_a_real_model_never_leaves_the_layout(tiny_llama_path):
    """The untrained tiny Llama writes anything; with the layout its texts stay on the layout's path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genqa.backbones.generation import generate_texts
    from genqa.config import QAArguments
    from genqa.data.encoding import PromptEncoder
    from genqa.data.task import GroundedLayout
    from genqa.data.tasks import get_task
    from genqa.data.templates import load_template

    tok = AutoTokenizer.from_pretrained(tiny_llama_path)
    tok.padding_side = "left"
    task = get_task(QAArguments(task="mcq_generation", template="chatml", options_column="options",
                                mcq_question_prefix=VI.question_prefix, mcq_answer_prefix=VI.answer_prefix))
    assert task.layout() == VI
    encoder = PromptEncoder(task, tok, load_template("chatml"), max_length=256)
    rows = [{"id": str(i), "context": c, "question": "", "options": [], "answers": [], "answer_starts": [],
             "label": -1} for i, c in enumerate(["Cây cầu được xây năm 1902 ở Huế.", "小明每天騎腳踏車上學。"])]
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_path).eval()
    free = generate_texts(model, encoder, rows, max_new_tokens=24, progress=False)
    held = generate_texts(model, encoder, rows, max_new_tokens=24, progress=False, constraint=VI)
    assert all(status(t) == INVALID for t in free)
    assert all(t.startswith(VI.question_prefix) and status(t) == OPEN for t in held), held
    grounded = generate_texts(model, encoder, rows, max_new_tokens=24, progress=False,
                              constraint=GroundedLayout(VI, "vi"))  # the rows' contexts reach the processor
    assert all(t.startswith(VI.question_prefix) and status(t) == OPEN for t in grounded), grounded
