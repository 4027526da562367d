"""Response-only masking, BOS handling and context-first truncation, decoded token by token."""

from __future__ import annotations

import copy

import pytest

from genqa.config import QAArguments
from genqa.data.encoding import PromptEncoder
from genqa.data.tasks import get_task
from genqa.data.templates import load_template

TEMPLATE_END = {"alpaca": "</s>", "alpaca_zh": "</s>", "llama2": "</s>", "llama3": "<|eot_id|>",
                "chatml": "<|im_end|>"}

ROW = {"id": "r1", "context": "The bridge over the Tam river was finished in 1902 by local masons.",
       "question": "When was the bridge finished?", "options": [], "answers": ["1902"], "answer_starts": [46],
       "label": -1}


def _mcq_row():
    return {"id": "m1", "context": "小明每天騎腳踏車上學。", "question": "小明怎麼上學？",
            "options": ["走路", "騎腳踏車", "坐公車", "坐火車"], "answers": [], "answer_starts": [], "label": 1}


def _trained_text(tok, enc):
    return tok.decode([t for t in enc["labels"] if t != -100], skip_special_tokens=False)


def _prompt_text(tok, enc):
    n = next(i for i, t in enumerate(enc["labels"]) if t != -100)
    return tok.decode(enc["input_ids"][:n], skip_special_tokens=False)


@pytest.mark.parametrize("template", sorted(TEMPLATE_END))
def test_only_answer_and_end_token_are_trained(template, tiny_tokenizer):
    task = get_task(QAArguments(task="extractive", template=template))
    enc = PromptEncoder(task, tiny_tokenizer, load_template(template), max_length=512).encode(dict(ROW))
    assert enc["status"] == "ok"
    assert _trained_text(tiny_tokenizer, enc) == "1902" + TEMPLATE_END[template]
    assert "When was the bridge finished?" in _prompt_text(tiny_tokenizer, enc)
    assert "1902" not in _prompt_text(tiny_tokenizer, enc).split("Question")[-1]


@pytest.mark.parametrize("template", ["llama2", "llama3", "alpaca_zh"])
def test_mcq_label_is_the_only_trained_text(template, tiny_tokenizer):
    args = QAArguments(task="mcq", template=template, options_columns=["a", "b", "c", "d"],
                       option_labels=["1", "2", "3", "4"])
    enc = PromptEncoder(get_task(args), tiny_tokenizer, load_template(template), max_length=512).encode(_mcq_row())
    assert _trained_text(tiny_tokenizer, enc) == "2" + TEMPLATE_END[template]
    assert "1. 走路" in _prompt_text(tiny_tokenizer, enc)


def test_mcq_generation_target_layout(tiny_tokenizer):
    args = QAArguments(task="mcq_generation", template="llama3", options_columns=["a", "b", "c", "d"],
                       mcq_question_prefix="Câu hỏi:", mcq_answer_prefix="Đáp án:")
    row = _mcq_row()
    enc = PromptEncoder(get_task(args), tiny_tokenizer, load_template("llama3"), max_length=512).encode(row)
    assert _trained_text(tiny_tokenizer, enc) == (
        "Câu hỏi: 小明怎麼上學？\nA. 走路\nB. 騎腳踏車\nC. 坐公車\nD. 坐火車\nĐáp án: B<|eot_id|>")


@pytest.fixture()
def bos_adding_tokenizer(tiny_tokenizer):
    """A tokenizer that adds BOS by itself, like Llama's."""
    from tokenizers.processors import TemplateProcessing

    tok = copy.deepcopy(tiny_tokenizer)
    tok.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    assert tok("x")["input_ids"][0] == tok.bos_token_id
    return tok


@pytest.mark.parametrize("template", ["llama2", "alpaca", "chatml"])
def test_exactly_one_bos(template, bos_adding_tokenizer):
    """llama2 writes BOS in the template, alpaca/chatml rely on the tokenizer: either way exactly one."""
    tok = bos_adding_tokenizer
    task = get_task(QAArguments(task="extractive", template=template))
    encoder = PromptEncoder(task, tok, load_template(template), max_length=512)
    enc = encoder.encode(dict(ROW))
    assert enc["input_ids"][0] == tok.bos_token_id and enc["input_ids"][1] != tok.bos_token_id
    assert enc["input_ids"].count(tok.bos_token_id) == 1
    from datasets import Dataset

    from genqa.data.tasks import CANONICAL_FEATURES
    _, report = encoder.encode_dataset(Dataset.from_list([dict(ROW)], features=CANONICAL_FEATURES))
    assert report.rows_with_double_bos == 0 and report.rows_missing_end_token == 0


def test_long_context_is_cut_not_question_or_answer(tiny_tokenizer):
    filler = " ".join(f"Sentence {i} talks about the weather in the valley." for i in range(60))
    context = filler + " The bridge was finished in 1902."
    row = dict(ROW, context=context, answer_starts=[context.index("1902")])
    task = get_task(QAArguments(task="extractive", template="alpaca"))
    encoder = PromptEncoder(task, tiny_tokenizer, load_template("alpaca"), max_length=260)
    enc = encoder.encode(row)
    assert enc["status"] == "context_truncated" and len(enc["input_ids"]) <= 260
    prompt = _prompt_text(tiny_tokenizer, enc)
    assert "When was the bridge finished?" in prompt      # question intact
    assert "finished in 1902" in prompt                    # the answer span survives the cut
    assert "Sentence 0 " not in prompt                     # the cut came from the context
    assert _trained_text(tiny_tokenizer, enc) == "1902</s>"


def test_row_that_cannot_fit_is_dropped_and_counted(tiny_tokenizer):
    from datasets import Dataset

    from genqa.data.tasks import CANONICAL_FEATURES
    long_q = dict(ROW, question="Why " * 200 + "?")
    task = get_task(QAArguments(task="extractive", template="alpaca"))
    encoder = PromptEncoder(task, tiny_tokenizer, load_template("alpaca"), max_length=256)
    kept, report = encoder.encode_dataset(Dataset.from_list([long_q, dict(ROW)], features=CANONICAL_FEATURES))
    assert report.rows == 2 and report.dropped_too_long == 1 and len(kept) == report.kept
    assert "dropped, answer would be truncated away: 1" in report.summary()


def test_template_that_masks_everything_is_rejected(tmp_path, tiny_tokenizer):
    from genqa.data.templates import TemplateError
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}{% endfor %}",
                   encoding="utf-8")
    task = get_task(QAArguments(task="extractive", template=str(bad)))
    with pytest.raises(TemplateError, match="mask every token"):
        PromptEncoder(task, tiny_tokenizer, load_template(str(bad)), max_length=256)


LOOP = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


@pytest.mark.parametrize("body, words", [
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}" + LOOP,
     ["`range` over more than 100,000 items"]),
    ("{{ 'x' * 3000000000 }}" + LOOP, ["3,000,000,000 items", "over the limit"]),
    ("{{ 2 ** 99999999 }}" + LOOP, ["exponent too large"]),
    # a branch the sample conversation never takes: Jinja would still fold the constant while compiling
    ("{% if messages|length > 99 %}{{ 'x' * 3000000000 }}{% endif %}" + LOOP, ["line 1", "3,000,000,000 items"]),
    ("{% if messages|length > 99 %}{{ ('x' * 1000) * 1000 * 1000 }}{% endif %}" + LOOP, ["1,000,000,000 items"]),
    ("{% if messages|length > 99 %}{{ [0] * 3000000000 }}{% endif %}" + LOOP, ["3,000,000,000 items"]),
    ("{% for i in range(90000) %}{{ 'abcdefghijklmnopqrstuvwxyz' }}{% endfor %}" + LOOP,
     ["more than 1,000,000 characters"]),
    ("{% include 'other.jinja' %}" + LOOP, ["line 1", "`{% include %}` is not allowed"]),
    ("{% extends 'base.jinja' %}", ["`{% extends %}` is not allowed"]),
])
def test_templates_over_the_limits_or_loading_others_are_refused_quickly(tmp_path, body, words):
    import time

    from genqa.data.templates import TemplateError
    path = tmp_path / "t.jinja"
    path.write_text(body, encoding="utf-8")
    start = time.monotonic()
    with pytest.raises(TemplateError) as err:
        load_template(str(path))
    assert time.monotonic() - start < 10 and str(path) in str(err.value)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_shipped_chat_templates_carry_generation_markers():
    for name in ("alpaca", "alpaca_zh", "llama2", "llama3", "chatml"):
        src = load_template(name)
        assert "{% generation %}" in src and "{% endgeneration %}" in src, name


@pytest.mark.parametrize("name", ["alpaca", "alpaca_zh", "llama2", "llama3", "chatml", "gemma"])
def test_portable_template_renders_the_same_text_in_plain_jinja2(name, tiny_tokenizer):
    """What `genqa export` writes into a GGUF file: the template without transformers' `{% generation %}` tags,
    rendered by plain Jinja2 as llama.cpp's Python bindings do, gives exactly transformers' rendering."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    from genqa.data.templates import portable_template

    template = load_template(name)
    portable = portable_template(template)
    assert "generation" not in portable.replace("add_generation_prompt", "")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader())
    messages = get_task(QAArguments(task="extractive")).messages(dict(ROW))
    for convo, gen in ((messages, False), (messages[:-1], True)):
        theirs = env.from_string(portable).render(messages=convo, add_generation_prompt=gen,
                                                  bos_token=tiny_tokenizer.bos_token,
                                                  eos_token=tiny_tokenizer.eos_token)
        ours = tiny_tokenizer.apply_chat_template(convo, chat_template=template, tokenize=False,
                                                  add_generation_prompt=gen)
        assert theirs == ours


def test_portable_template_keeps_whitespace_control():
    from genqa.data.templates import portable_template

    assert portable_template("a {%- generation -%} b {%endgeneration%} c") == "a {%- if true -%} b {% endif %} c"


def test_trl_assistant_only_mask_matches_genqa(tiny_tokenizer):
    """TRL's assistant_only_loss path (generation markers) trains the same tokens genqa does."""
    template = load_template("llama3")
    task = get_task(QAArguments(task="extractive", template="llama3"))
    enc = PromptEncoder(task, tiny_tokenizer, template, max_length=512).encode(dict(ROW))
    out = tiny_tokenizer.apply_chat_template(task.messages(dict(ROW)), chat_template=template, tokenize=True,
                                             return_dict=True, return_assistant_tokens_mask=True)
    trl_trained = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tiny_tokenizer.decode(trl_trained) == _trained_text(tiny_tokenizer, enc)


def test_tokenizer_own_chat_template(tiny_tokenizer):
    from genqa.data.templates import TemplateError

    tok = copy.deepcopy(tiny_tokenizer)
    with pytest.raises(TemplateError, match="has none"):
        load_template("tokenizer", tok)
    tok.chat_template = load_template("chatml")
    task = get_task(QAArguments(task="extractive", template="tokenizer"))
    enc = PromptEncoder(task, tok, load_template("tokenizer", tok), max_length=512).encode(dict(ROW))
    assert _trained_text(tok, enc) == "1902<|im_end|>"


def _rows_of_every_kind():
    long_context = dict(ROW, id="r2", context="Sentence 0 is filler. " * 60 + ROW["context"],
                        answer_starts=[len("Sentence 0 is filler. " * 60) + 46])
    too_long = dict(ROW, id="r3", question="Why " * 200 + "?")
    unanswerable = dict(ROW, id="r4", answers=[], answer_starts=[])
    return [dict(ROW), long_context, too_long, unanswerable]


@pytest.mark.parametrize("template", ["alpaca", "chatml", "llama3"])
def test_batched_encoding_equals_row_by_row(template, tiny_tokenizer):
    task = get_task(QAArguments(task="extractive", template=template))
    encoder = PromptEncoder(task, tiny_tokenizer, load_template(template), max_length=256)
    rows = _rows_of_every_kind()
    batch = {k: [r[k] for r in rows] for k in rows[0]}
    got = encoder.encode_batch(batch)
    want = [encoder.encode(r) for r in rows]
    assert [s for s in got["status"]] == [w["status"] for w in want] == ["ok", "context_truncated", "too_long", "ok"]
    assert got["input_ids"] == [w["input_ids"] for w in want]
    assert got["labels"] == [w["labels"] for w in want]


def test_encoded_rows_are_cached_by_content(tmp_path, monkeypatch, tiny_tokenizer, capsys):
    from datasets import Dataset

    from genqa.data.tasks import CANONICAL_FEATURES

    monkeypatch.setenv("GENQA_CACHE", str(tmp_path))
    data = Dataset.from_list(_rows_of_every_kind(), features=CANONICAL_FEATURES)
    task = get_task(QAArguments(task="extractive", template="alpaca"))
    encoder = PromptEncoder(task, tiny_tokenizer, load_template("alpaca"), max_length=256)
    first, report = encoder.encode_dataset(data)
    assert "cached for reruns" in capsys.readouterr().out
    again, report2 = encoder.encode_dataset(data, "validation")
    assert "reused from" in capsys.readouterr().out
    assert again.to_list() == first.to_list() and len(first) == 3
    assert report2.to_dict() == {**report.to_dict(), "split": "validation"}
    assert len(list((tmp_path / "encoded").iterdir())) == 1
    # another max_length, other rows or another template: encoded anew, under another key
    PromptEncoder(task, tiny_tokenizer, load_template("alpaca"), max_length=300).encode_dataset(data)
    encoder.encode_dataset(data.select([0, 1]))
    PromptEncoder(task, tiny_tokenizer, load_template("chatml"), max_length=256).encode_dataset(data)
    assert len(list((tmp_path / "encoded").iterdir())) == 4
    assert "reused" not in capsys.readouterr().out
    # a damaged entry is encoded again; GENQA_ENCODED_CACHE=0 turns the cache off
    for entry in (tmp_path / "encoded").iterdir():
        (entry / "encoding_report.json").write_text("{", encoding="utf-8")
    assert encoder.encode_dataset(data)[0].to_list() == first.to_list()
    assert "reused" not in capsys.readouterr().out
    monkeypatch.setenv("GENQA_ENCODED_CACHE", "0")
    encoder.encode_dataset(data)
    assert "cached" not in capsys.readouterr().out


def test_encoding_in_worker_processes_gives_the_same_rows(tmp_path, monkeypatch, tiny_tokenizer):
    from datasets import Dataset

    from genqa.data.tasks import CANONICAL_FEATURES

    monkeypatch.setenv("GENQA_ENCODED_CACHE", "0")
    rows = [dict(r, id=f"{r['id']}-{i}") for i in range(80) for r in _rows_of_every_kind()]  # 320 rows
    data = Dataset.from_list(rows, features=CANONICAL_FEATURES)
    task = get_task(QAArguments(task="extractive", template="alpaca"))
    one = PromptEncoder(task, tiny_tokenizer, load_template("alpaca"), max_length=256).encode_dataset(data)
    two = PromptEncoder(task, tiny_tokenizer, load_template("alpaca"), max_length=256, num_proc=2).encode_dataset(data)
    assert one[0].to_list() == two[0].to_list() and one[1].to_dict() == two[1].to_dict()


def test_report_counts_answers_longer_than_the_prediction_budget(tiny_tokenizer):
    """The data report counts trained answers (end token included) that the task's generation budget would cut, and
    says which `max_new_tokens` keeps them whole; the recipe's `max_new_tokens` is the budget `answer_budget` gives."""
    from datasets import Dataset

    from genqa.data.tasks import CANONICAL_FEATURES

    long_answer = "the bridge over the river in the valley was finished"
    context = f"In 1902 {long_answer} after ten years."
    rows = [dict(ROW), dict(ROW, id="long", context=context, answers=[long_answer],
                            answer_starts=[context.index(long_answer)])]
    data = Dataset.from_list(rows, features=CANONICAL_FEATURES)
    reports = {}
    for budget in (4, None, 200):
        task = get_task(QAArguments(task="extractive", template="alpaca", max_new_tokens=budget))
        assert task.answer_budget == (budget or task.max_new_tokens)
        encoder = PromptEncoder(task, tiny_tokenizer, load_template("alpaca"), max_length=512)
        _, reports[budget] = encoder.encode_dataset(data)
    lengths = sorted(len([t for t in encoder.encode(r)["labels"] if t != -100]) for r in rows)
    small = reports[4]
    assert small.longest_answer_tokens == lengths[-1] > 4 and small.answer_budget == 4
    assert small.answers_over_budget == sum(n > 4 for n in lengths) >= 1
    assert any(f"`max_new_tokens: {lengths[-1]}`" in note for note in small.notes)
    assert "longer than the 4-token prediction budget (max_new_tokens): " in small.summary()
    assert reports[200].answers_over_budget == 0 and not any("budget" in n for n in reports[200].notes)
    assert reports[None].answer_budget == get_task(QAArguments(task="extractive")).max_new_tokens


def test_label_scored_tasks_have_no_answer_budget(tiny_tokenizer):
    from datasets import Dataset

    from genqa.data.tasks import CANONICAL_FEATURES

    task = get_task(QAArguments(task="mcq", options_columns=["a", "b", "c", "d"], template="alpaca",
                                max_new_tokens=1))
    row = {"id": "q1", "context": "Mary walks to school.", "question": "How does Mary go to school?",
           "options": ["walk", "bus", "car", "train"], "answers": ["A"], "answer_starts": [], "label": 0}
    row = {k: row.get(k) for k in CANONICAL_FEATURES}
    encoder = PromptEncoder(task, tiny_tokenizer, load_template("alpaca"), max_length=512)
    _, report = encoder.encode_dataset(Dataset.from_list([row], features=CANONICAL_FEATURES))
    assert report.kept == 1 and report.answer_budget == 0 and report.answers_over_budget == 0
    assert "prediction budget" not in report.summary()
