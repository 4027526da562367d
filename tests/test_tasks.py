"""Tasks, data-source readers and answer read-back on small hand-written fixtures."""

from __future__ import annotations

import json
import unicodedata

import pytest
from datasets import Dataset

from genqa.config import QAArguments
from genqa.data.answers import map_to_context
from genqa.data.sources import DataError, load_source
from genqa.data.splits import grouped_split
from genqa.data.tasks import get_task, split_options

LABELS = ["A", "B", "C", "D"]


def test_split_options_lines_tabs_and_order():
    q, opts = split_options("Câu 3: Thủ đô là gì?\n\tA. Huế. \tB. Hà Nội. \tC. Đà Nẵng. \tD. Vinh.", LABELS, "r")
    assert q == "Câu 3: Thủ đô là gì?" and opts == ["Huế.", "Hà Nội.", "Đà Nẵng.", "Vinh."]
    _, opts = split_options("Q?\nA. one\nC. three\nB. two\nD. four", LABELS, "r")
    assert opts == ["one", "two", "three", "four"]
    with pytest.raises(DataError, match="row 7"):
        split_options("Q?\nA. one\nB. two", LABELS, "row 7")


def test_question_number_pattern_drops_exam_numbering():
    """`Câu 81.` starts every VNHSGE question: removed from the question (the target an MCQ generator learns), the
    options split off as before; a pattern that is not a regex is a recipe error naming the key."""
    rows = Dataset.from_list([{"ID": "x", "Explanation": "ctx", "Choice": "B",
                               "Question": "Câu 81. Thủ đô là gì?\nA. Huế.\nB. Hà Nội.\nC. Đà Nẵng.\nD. Vinh."},
                              {"ID": "y", "Explanation": "ctx", "Choice": "A",
                               "Question": "Câu 5 : Số 81 là gì?\nA. một\nB. hai\nC. ba\nD. bốn"}])
    args = dict(task="mcq_generation", id_column="ID", context_column="Explanation", question_column="Question",
                answer_column="Choice", options_in_question=True)
    kept = get_task(QAArguments(**args)).to_canonical(rows, "exam.json")
    assert kept[0]["question"] == "Câu 81. Thủ đô là gì?"
    pattern = r"^\s*Câu\s*\d+\s*[.:]\s*"
    out = get_task(QAArguments(**args, question_number_pattern=pattern)).to_canonical(rows, "exam.json")
    assert [r["question"] for r in out] == ["Thủ đô là gì?", "Số 81 là gì?"]
    assert out[0]["options"] == ["Huế.", "Hà Nội.", "Đà Nẵng.", "Vinh."] and out[0]["label"] == 1
    with pytest.raises(ValueError, match="question_number_pattern"):
        QAArguments(**args, question_number_pattern="Câu (")


@pytest.mark.parametrize("gold,index", [("B", 1), ("b.", 1), ("2", 1), (2, 1), ("選項2", 1), ("two", 1)])
def test_mcq_gold_forms(gold, index):
    task = get_task(QAArguments(task="mcq", options_columns=["選項1", "選項2", "選項3", "選項4"]))
    assert task.label_index(gold, ["one", "two", "three", "four"], "row") == index


def test_mcq_unknown_gold_names_row():
    task = get_task(QAArguments(task="mcq", options_columns=["a", "b", "c", "d"]))
    with pytest.raises(DataError, match="row 3"):
        task.label_index("E", ["w", "x", "y", "z"], "row 3")


@pytest.mark.parametrize("text,expected", [("B", "B"), (" (c) because", "C"), ("The answer is D.", "D"),
                                           ("Đáp án: A", "A"), ("It is a dog, so B", "B"),
                                           ("The correct option is a: no wait, B", "B"), ("no idea", None), ("", None)])
def test_mcq_parse(text, expected):
    task = get_task(QAArguments(task="mcq", options_columns=["a", "b", "c", "d"]))
    assert task.parse(text) == expected


@pytest.mark.parametrize("text,expected", [("2", "2"), ("答案是2", "2"), ("正确答案为3。", "3"), ("选项4", "4"),
                                           ("答案：1", "1"), ("12", None)])
def test_mcq_parse_numeric_labels_in_chinese(text, expected):
    task = get_task(QAArguments(task="mcq", options_columns=["a", "b", "c", "d"], option_labels=["1", "2", "3", "4"]))
    assert task.parse(text) == expected


def test_on_bad_row_skip_counts(capsys):
    ds = Dataset.from_list([{"context": "Sky is blue.", "question": "Color?", "answers": "blue"},
                            {"context": "Grass is green.", "question": "Color?", "answers": "red"}])
    with pytest.raises(DataError, match="on_bad_row: skip"):
        get_task(QAArguments(task="extractive")).to_canonical(ds, "toy")
    rows = get_task(QAArguments(task="extractive", on_bad_row="skip")).to_canonical(ds, "toy")
    assert len(rows) == 1 and "skipped 1 bad rows" in capsys.readouterr().out


def test_c3_and_squad_without_ids(tmp_path):
    c3 = [[["男：你去哪儿？", "女：我去图书馆。"], [{"question": "女的去哪儿？", "choice": ["商店", "图书馆"],
                                                  "answer": "图书馆"}], "d-1"]]
    (tmp_path / "c3.json").write_text(json.dumps(c3, ensure_ascii=False), encoding="utf-8")
    rows = get_task(QAArguments(task="mcq", options_column="choice", answer_column="answer")).to_canonical(
        load_source(str(tmp_path / "c3.json"))["train"], "c3")
    assert rows[0]["id"] == "d-1-0" and rows[0]["label"] == 1 and rows[0]["context"].startswith("男：")
    squad = {"data": [{"title": "t", "paragraphs": [{"context": "Hà Nội là thủ đô.", "qas": [
        {"question": "Thủ đô?", "answers": [{"text": "Hà Nội", "answer_start": 0}]}]}]}]}
    (tmp_path / "vi.json").write_text(json.dumps(squad, ensure_ascii=False), encoding="utf-8")
    ds = load_source(str(tmp_path / "vi.json"))["train"]
    assert ds[0]["id"] == "0-0-0" and ds[0]["answers"] == ["Hà Nội"]


def test_grouped_split_keeps_contexts_apart():
    ds = Dataset.from_list([{"context": f"c{i // 3}", "q": str(i)} for i in range(30)])
    train, val = grouped_split(ds, 0.2, 1, "context")
    assert not set(train["context"]) & set(val["context"]) and len(train) + len(val) == 30


def test_map_generated_answer_back_to_context():
    ctx = "The  Old Bridge was built in 1902 by Mira."
    assert map_to_context("1902", ctx) == ("1902", "exact")
    assert map_to_context("the old bridge", ctx) == ("The  Old Bridge", "normalized")
    assert map_to_context("a castle", ctx) == ("a castle", "not_in_context")
    assert map_to_context("", ctx) == ("", "no_answer")
    vi = unicodedata.normalize("NFD", "Sông Hồng chảy qua Hà Nội.")
    span, how = map_to_context(unicodedata.normalize("NFC", "hà nội"), vi)
    assert how == "normalized" and unicodedata.normalize("NFC", span) == "Hà Nội"


def test_extractive_no_answer_read_back():
    task = get_task(QAArguments(task="extractive", no_answer_text="unanswerable"))
    assert task.parse("Unanswerable.") == "" and task.parse(" 1902 ") == "1902"


def test_nfd_context_with_nfc_answer_is_matched_in_nfc():
    """A Vietnamese context in NFD and its answer in NFC: the answer is the context's own span, offset kept."""
    ctx = unicodedata.normalize("NFD", "Sông Hồng chảy qua Hà Nội.")
    answer = unicodedata.normalize("NFC", "Hà Nội")
    ds = Dataset.from_list([{"context": ctx, "question": "Qua đâu?", "answers": answer}])
    row = get_task(QAArguments(task="extractive")).to_canonical(ds, "vi")[0]
    start = row["answer_starts"][0]
    assert row["answers"][0] == ctx[start:start + len(row["answers"][0])]
    assert unicodedata.normalize("NFC", row["answers"][0]) == answer
    ds = Dataset.from_list([{"context": ctx, "question": "Q", "answers": "Hà Nam"}])
    with pytest.raises(DataError, match="does not occur in its context"):
        get_task(QAArguments(task="extractive")).to_canonical(ds, "vi")


def test_extractive_answer_start_must_be_a_number():
    ds = Dataset.from_list([{"context": "Sky is blue.", "question": "Color?", "answers": "blue", "s": "abc"}])
    with pytest.raises(DataError, match=r"toy row 0 .*'abc'"):
        get_task(QAArguments(task="extractive", answer_start_column="s")).to_canonical(ds, "toy")


def _mcq_rows(task: str, options: list[str], question: str = "Q?"):
    cols = ["a", "b", "c", "d"]
    ds = Dataset.from_list([{"id": "r1", "context": "C.", "question": question, **dict(zip(cols, options, strict=True)),
                             "answer": "A"}])
    qa = QAArguments(task=task, id_column="id", options_columns=cols, answer_column="answer")
    return get_task(qa).to_canonical(ds, "toy")


def test_mcq_empty_option_refused_trailing_empty_dropped():
    with pytest.raises(DataError, match=r"\(id r1\): option B is empty"):
        _mcq_rows("mcq", ["red", " ", "green", "black"])
    assert list(_mcq_rows("mcq", ["red", "blue", "green", ""])[0]["options"]) == ["red", "blue", "green"]


@pytest.mark.parametrize("options, question, why", [
    (["Paris", "paris", "Rome", "Oslo"], "Q?", "same up to case"),
    (["Paris", "Rome.", "Rome", "Oslo"], "Q?", "same up to case"),
    (["Paris", "Rome", "Kyiv", "Oslo"], "  ", "question is empty"),
])
def test_mcq_generation_rows_checked_like_the_parser(options, question, why):
    with pytest.raises(DataError, match=why):
        _mcq_rows("mcq_generation", options, question)


def test_mcq_generation_written_targets_parse_back():
    from genqa.data.mcq_format import parse_mcq

    task = get_task(QAArguments(task="mcq_generation", id_column="id", options_columns=["a", "b", "c", "d"],
                                answer_column="answer"))
    row = _mcq_rows("mcq_generation", ["Paris", "Rome", "Kyiv", "Oslo"], "Which\ncity?")[0]
    parsed = parse_mcq(task.target(row))
    assert parsed.ok and parsed.question == "Which city?" and parsed.answer_label == "A"


@pytest.mark.parametrize("fmt", ["{0} {context}", "{context", "{context.__class__}", "{context[0]}", "{context!r}",
                                 "{labels}"])
def test_prompt_format_only_documented_fields(fmt):
    with pytest.raises(ValueError, match="prompt_format"):
        QAArguments(prompt_format=fmt)
    assert QAArguments(prompt_format="{instruction} {{literal}} {context} {question} {options}").prompt_format


def test_glob_dataset_path_concatenates_files_in_path_order(tmp_path):
    for part, rows in (("b", [{"id": "b1", "q": "x"}]), ("a", [{"id": "a1", "q": "y"}, {"id": "a2", "q": "z"}])):
        (tmp_path / part).mkdir()
        (tmp_path / part / "rows.json").write_text(json.dumps(rows), encoding="utf-8")
    data = load_source(str(tmp_path / "*" / "rows.json"))["train"]
    assert data["id"] == ["a1", "a2", "b1"]


def test_glob_dataset_path_refuses_no_match_and_mixed_layouts(tmp_path):
    with pytest.raises(DataError, match="no file matches"):
        load_source(str(tmp_path / "*.json"))
    (tmp_path / "a.json").write_text(json.dumps([{"id": "1", "q": "x"}]), encoding="utf-8")
    (tmp_path / "b.json").write_text(json.dumps([{"id": "2", "question": "x"}]), encoding="utf-8")
    with pytest.raises(DataError, match=r"b\.json and .*a\.json have different columns \(q, question\)"):
        load_source(str(tmp_path / "*.json"))
    (tmp_path / "b.json").write_text("id,q\n2,x\n", encoding="utf-8")
    (tmp_path / "b.json").rename(tmp_path / "b.csv")
    with pytest.raises(DataError, match="not all one format"):
        load_source(str(tmp_path / "*"))


def test_answer_cut_inside_a_multibyte_character_maps_onto_its_context():
    # byte-level BPE: an answer cut by the token budget mid-character decodes with a trailing U+FFFD
    ctx = "Thành phố Hồ Chí Minh được đổi tên năm 1976."
    assert map_to_context("Hồ Chí Minh đư\ufffd", ctx) == ("Hồ Chí Minh đư", "exact")
    assert map_to_context("\ufffd\ufffd", ctx) == ("", "not_in_context")
    assert map_to_context("tên năm 1976", ctx + " \ufffd") == ("tên năm 1976", "exact")


def test_renamed_repeated_ids_never_collide_with_an_existing_id():
    from genqa.data.rows import unique_ids

    ids, renamed = unique_ids(["a", "a", "a#2", "b", "a", "a#2"])
    assert renamed == 3 and len(set(ids)) == len(ids) == 6
    assert ids[:4] == ["a", "a#3", "a#2", "b"]


def test_each_task_hands_prediction_its_decoding():
    from genqa.backbones import PredictSettings
    from genqa.data.mcq_format import MCQLayout
    from genqa.data.task import GroundedLayout, SpanOfContext
    from genqa.data.tasks import MCQTask, OptionRows

    settings = PredictSettings(constrain_to_context=True, constrain_to_layout=True)
    ext = get_task(QAArguments(task="extractive"))
    assert ext.decoding(settings).constraint == SpanOfContext(ext.args.no_answer_text)
    calibrated = ext.decoding(PredictSettings(constrain_to_context=True, no_answer_threshold=0.5))
    assert calibrated.constraint == SpanOfContext(None) and calibrated.no_answer_threshold == 0.5
    assert calibrated.no_answer_text == ext.args.no_answer_text
    assert ext.decoding(PredictSettings(constrain_to_context=False)).constraint is None
    assert get_task(QAArguments(task="abstractive")).decoding(settings).constraint is None
    mcq = get_task(QAArguments(task="mcq", options_column="options"))
    scored = mcq.decoding(settings, "score")
    assert scored.mode == "score_labels" and scored.labels_of({"options": ["x", "y"]}) == ["A", "B"]
    assert mcq.decoding(settings, "generate").mode == "generate"
    gen = get_task(QAArguments(task="mcq_generation", options_column="options"))
    assert isinstance(gen.decoding(settings).constraint, MCQLayout)
    assert gen.decoding(PredictSettings(constrain_to_layout=False)).constraint is None
    grounded = get_task(QAArguments(task="mcq_generation", options_column="options", metric_lang="vi"))
    assert grounded.decoding(PredictSettings(constrain_to_layout=True, key_from_context=True)).constraint == \
        GroundedLayout(grounded.layout(), "vi")
    with pytest.raises(DataError, match="constrain_to_layout"):
        grounded.decoding(PredictSettings(constrain_to_layout=False, key_from_context=True))
    assert "key_from_context" in PredictSettings(constrain_to_layout=True, key_from_context=True).to_dict()
    assert "key_from_context" not in PredictSettings(constrain_to_layout=True).to_dict()  # earlier fingerprints hold
    unheld = QAArguments(task="mcq_generation", options_column="options", context_column="c", key_from_context=True,
                         constrain_to_layout=False)
    assert any("key_from_context" in p for p in get_task(unheld).recipe_problems())
    # MCQ generation shares the option rows with MCQ answering, not MCQ answering's reading of answers
    assert isinstance(gen, OptionRows) and not isinstance(gen, MCQTask)


def test_nearest_span_reads_a_near_copy_back_as_the_span_most_like_it():
    from genqa.data.answers import nearest_span

    ctx = "Năm 1802, Nguyễn Ánh lên ngôi hoàng đế và đặt niên hiệu là Gia Long, đóng đô ở Phú Xuân."
    # a syllable changed and the case of the first word: no span, but one span is almost it
    assert nearest_span("nguyễn anh lên ngôi hoàng đế", ctx) == "Nguyễn Ánh lên ngôi hoàng đế"
    assert nearest_span("đóng đô tại Phú Xuân.", ctx) == "đóng đô ở Phú Xuân"  # edge punctuation stripped
    assert nearest_span("Gia Long", ctx) == "Gia Long"  # a span stays as it is
    assert nearest_span("   ", ctx) == "" and nearest_span("Gia Long", "") == ""
    # Chinese has no spaces: candidates are spans of characters
    zh = "北京是中华人民共和国的首都，也是全国的政治中心。"
    assert nearest_span("中华人民共合国的首都", zh) == "中华人民共和国的首都"


def test_extractive_answers_read_back_nearest_only_when_asked():
    row = {"context": "Paris nằm ở điểm gặp nhau của các hành trình thương mại đường bộ và đường sông."}
    plain = get_task(QAArguments(task="extractive", constrain_to_context=False))
    assert plain.read_answer(row, "các hành trình thương mại đường bô", "generate") == (
        "các hành trình thương mại đường bô", "not_in_context")
    near = get_task(QAArguments(task="extractive", constrain_to_context=False, nearest_span=True))
    assert near.recipe_problems() == []
    assert near.read_answer(row, "các hành trình thương mại đường bô", "generate") == (
        "các hành trình thương mại đường bộ", "nearest")
    assert near.read_answer(row, "ĐIỂM GẶP NHAU", "generate") == ("điểm gặp nhau", "normalized")
    assert near.read_answer(row, near.args.no_answer_text, "generate") == ("", "no_answer")
    both = get_task(QAArguments(task="extractive", nearest_span=True))
    assert any("constrain_to_context: false" in p for p in both.recipe_problems())
