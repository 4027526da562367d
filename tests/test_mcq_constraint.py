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
    (GOOD.replace("\nB.", "\n\nB."), False),                 # a blank line (the parser skips it)
    (GOOD + ". Vì năm 1902", False),                         # text after the key (the parser ignores it)
])
def test_locate_refuses_what_breaks_the_layout(bad, parser_refuses):
    assert status(bad) == INVALID
    assert parse_mcq(bad, LABELS, VI.question_prefix, VI.answer_prefix).ok is not parser_refuses


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


def test_generation_with_a_real_model_never_leaves_the_layout(tiny_llama_path):
    """The untrained tiny Llama writes anything; with the layout its texts stay on the layout's path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genqa.backbones.generation import generate_texts
    from genqa.config import QAArguments
    from genqa.data.encoding import PromptEncoder
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
