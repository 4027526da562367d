"""SQuAD v1.1 / v2.0 EM and F1 (official parity and language options), MCQ accuracy and generation quality."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from genqa.data.mcq_format import format_mcq
from genqa.data.sources import squad_examples, squad_question_id, squad_version
from genqa.scoring.metrics import (
    exact_match_score,
    f1_score,
    mcq_accuracy,
    mcq_generation_quality,
    normalize_answer,
    normalize_choice,
    squad_scores,
)


def _whole(dataset):
    """A SQuAD JSON object from the object itself or its `data` list."""
    return dataset if isinstance(dataset, dict) else {"data": dataset}


def squad_v1(dataset, predictions, lang="en"):
    """Official v1.1 evaluation of a SQuAD JSON (object or `data` list): the file walked by genqa.data.sources."""
    return squad_scores(squad_examples(_whole(dataset)), predictions, lang=lang, version=1)


def squad_v2(dataset, predictions, lang="en"):
    """Official v2.0 evaluation of a SQuAD JSON (object or `data` list)."""
    return squad_scores(squad_examples(_whole(dataset)), predictions, lang=lang, version=2)


def is_squad_v2(dataset):
    return squad_version(_whole(dataset)) == 2

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SQUAD = SHARED_DATA / "squad"


def _load(name: str):
    path = SQUAD / name
    if not path.is_file():
        pytest.skip(f"shared data not available: {path}")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# ---- official SQuAD 2.0 parity on the real dev set ------------------------------------------------------------

REFERENCE = {
    "t5-small-zero-shot.dev-v2.0.predictions.json": {
        "exact": 34.42263960245936,
        "f1": 39.5366934720806,
        "HasAns_exact": 68.94399460188934,
        "HasAns_f1": 79.18676815013714,
        "NoAns_exact": 0.0,
        "total": 11873,
    },
    "t5-small-1epoch.dev-v2.0.predictions.json": {
        "exact": 46.8205171397288,
        "f1": 50.03194057891786,
        "HasAns_exact": 43.55600539811066,
        "HasAns_f1": 49.98806182413807,
        "NoAns_exact": 50.07569386038688,
    },
}


@pytest.fixture(scope="module")
def squad_v2_dev():
    return _load("dev-v2.0.json")


@pytest.mark.parametrize("pred_file", sorted(REFERENCE))
def test_squad_v2_official_parity(squad_v2_dev, pred_file):
    preds = _load(pred_file)
    got = squad_v2(squad_v2_dev["data"], preds)
    for key, value in REFERENCE[pred_file].items():
        assert got[key] == value, key
    assert list(got) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
                         "NoAns_exact", "NoAns_f1", "NoAns_total"]
    assert (got["total"], got["HasAns_total"], got["NoAns_total"]) == (11873, 5928, 5945)
    assert is_squad_v2(squad_v2_dev)


def test_squad_v1_real_gold_as_prediction():
    data = _load("dev-v1.1.json")
    assert not is_squad_v2(data)
    qas = [qa for art in data["data"] for par in art["paragraphs"] for qa in par["qas"]]
    assert squad_v1(data["data"], {qa["id"]: qa["answers"][0]["text"] for qa in qas}) == {
        "exact_match": 100.0, "f1": 100.0}
    # v1.1 quirk: one question's last gold answer is ".", which normalises to "" and gets F1 0 (EM 1)
    got = squad_v1(data, {qa["id"]: qa["answers"][-1]["text"] for qa in qas})
    assert got == {"exact_match": 100.0, "f1": 100.0 * (len(qas) - 1) / len(qas)}


# ---- normalisation ---------------------------------------------------------------------------------------------

def test_official_normalisation_articles_punctuation_whitespace():
    assert normalize_answer("The  Quick, brown fox!") == "quick brown fox"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("another theory") == "another theory"  # articles only as whole words
    assert normalize_answer("(1,000 km)") == "1000 km"
    assert exact_match_score("the Eiffel Tower.", "Eiffel tower") == 1
    assert exact_match_score("Eiffel", "Eiffel tower") == 0


def test_f1_token_overlap():
    assert f1_score("the big red dog", "red dog") == pytest.approx(0.8)
    assert f1_score("red red dog", "red dog cat") == pytest.approx(2 / 3)
    assert f1_score("cat", "dog") == 0


def test_vietnamese_nfc_vs_nfd():
    gold = "Thành phố Đà Lạt"
    pred = unicodedata.normalize("NFD", "thành phố đà lạt")
    assert pred != unicodedata.normalize("NFC", pred)
    assert exact_match_score(pred, gold, lang="en") == 0  # the official rule compares code points
    assert f1_score(pred, gold, lang="en") < 1
    assert exact_match_score(pred, gold, lang="vi") == 1
    assert f1_score(pred, gold, lang="vi") == 1.0
    assert normalize_answer(pred, "vi") == normalize_answer(gold, "vi") == "thành phố đà lạt"


def test_chinese_character_f1_and_punctuation():
    assert normalize_answer("《红楼梦》，第一回。", "zh") == "红楼梦第一回"
    assert normalize_answer("北京 大学！", "zh") == "北京大学"
    assert exact_match_score("「长江」", "长江。", lang="zh") == 1
    assert exact_match_score("Hello,World", "hello world", lang="zh") == 1
    # "北京" vs "北京大学": 2 common chars, precision 1, recall 1/2
    assert f1_score("北京", "北京大学", lang="zh") == pytest.approx(2 / 3)
    assert f1_score("北京", "北京大学", lang="en") == 0  # one whitespace token each: no overlap
    assert f1_score("大学", "大学", lang="zh") == 1.0


def test_unknown_lang():
    with pytest.raises(ValueError, match="lang"):
        normalize_answer("x", lang="fr")


# ---- v1.1 vs v2.0 behaviour ------------------------------------------------------------------------------------

def test_empty_answers_f1_differs_by_version():
    assert f1_score("", "", version=2) == 1
    assert f1_score("", "", version=1) == 0
    assert f1_score("something", "", version=2) == 0


def test_missing_prediction_v1_counts_zero(capsys):
    examples = [("q1", ["Paris"]), ("q2", ["Rome"])]
    got = squad_scores(examples, {"q1": "paris"}, version=1)
    assert got == {"exact_match": 50.0, "f1": 50.0}
    assert "1 of 2 questions have no prediction (e.g. q2); each scores 0." in capsys.readouterr().err


def test_missing_prediction_v2_counts_zero(capsys):
    """Unlike the official v2.0 script (which skips it, then crashes on an empty group), a missing prediction is 0."""
    examples = [("q1", ["Paris"]), ("q2", ["Rome"]), ("q3", [])]
    got = squad_scores(examples, {"q1": "paris", "q3": ""})
    captured = capsys.readouterr()
    assert "1 of 3 questions have no prediction (e.g. q2)" in captured.err
    assert captured.out == ""
    assert got == {"exact": 100.0 * 2 / 3, "f1": 100.0 * 2 / 3, "total": 3, "HasAns_exact": 50.0,
                   "HasAns_f1": 50.0, "HasAns_total": 2, "NoAns_exact": 100.0, "NoAns_f1": 100.0, "NoAns_total": 1}
    assert squad_scores([("q1", [])], {})["NoAns_total"] == 1  # the official script divides by zero here


@pytest.mark.parametrize("version", [1, 2])
def test_non_string_prediction_is_an_error_naming_the_id(version):
    from genqa.errors import GenqaError

    with pytest.raises(GenqaError, match="'q1'.*True"):
        squad_scores([("q1", ["True"])], {"q1": True}, version=version)


def test_mcq_accuracy_with_labels_counts_non_labels_invalid():
    assert mcq_accuracy(["A", "B"], ["A", "Z"], labels=["A", "B"]) == {"accuracy": 0.5, "correct": 1, "total": 2,
                                                                       "invalid": 1}


def test_unanswerable_handling_v2():
    examples = [("a", []), ("b", []), ("c", ["the moon"])]
    got = squad_scores(examples, {"a": "", "b": "a crater", "c": "moon"})
    assert got["NoAns_exact"] == 50.0 and got["NoAns_total"] == 2
    assert got["HasAns_exact"] == 100.0 and got["HasAns_total"] == 1
    assert got["exact"] == 100.0 * 2 / 3


def test_v2_groups_only_when_present():
    got = squad_scores([("a", ["x"])], {"a": "x"})
    assert got == {"exact": 100.0, "f1": 100.0, "total": 1, "HasAns_exact": 100.0, "HasAns_f1": 100.0,
                   "HasAns_total": 1}


def test_v2_drops_gold_answers_that_normalise_to_empty():
    # official quirk: the question still counts as HasAns, but its only gold becomes ""
    got = squad_scores([("a", ["The"])], {"a": ""})
    assert got["exact"] == 100.0 and got["HasAns_total"] == 1
    assert squad_scores([("a", ["The"])], {"a": ""}, version=1) == {"exact_match": 100.0, "f1": 0.0}


def test_max_over_gold_answers():
    got = squad_scores([("a", ["red car", "a small red car"])], {"a": "small red car"})
    assert got["exact"] == 100.0 and got["f1"] == 100.0


def _tiny_squad(with_ids: bool, impossible: bool) -> dict:
    qas = [
        {"question": "Who wrote it?", "answers": [{"text": "Ana Lopez", "answer_start": 0}]},
        {"question": "When?",
         "answers": [{"text": "in 1990", "answer_start": 20}, {"text": "1990", "answer_start": 23}]},
    ]
    if impossible:
        qas.append({"question": "Why?", "answers": [], "is_impossible": True})
    if with_ids:
        for i, qa in enumerate(qas):
            qa["id"] = f"q{i}"
    return {"version": "test", "data": [{"title": "T", "paragraphs": [{"context": "...", "qas": qas}]}]}


def test_squad_examples_generates_missing_ids():
    data = _tiny_squad(with_ids=False, impossible=False)
    assert squad_examples(data) == [("0-0-0", ["Ana Lopez"]), ("0-0-1", ["in 1990", "1990"])]
    assert squad_question_id(3, 1, 4) == "3-1-4"


def test_squad_v1_and_v2_on_tiny_dataset():
    data = _tiny_squad(with_ids=True, impossible=True)
    preds = {"q0": "Ana", "q1": "1990.", "q2": ""}
    v1 = squad_v1(data, preds)
    assert v1["exact_match"] == 100.0 * 2 / 3
    assert v1["f1"] == 100.0 * (2 * 1.0 * 0.5 / 1.5 + 1 + 0) / 3
    v2 = squad_v2(data["data"], preds)
    assert v2["exact"] == 100.0 * 2 / 3
    assert v2["f1"] == 100.0 * (2 * 1.0 * 0.5 / 1.5 + 1 + 1) / 3
    assert v2["NoAns_total"] == 1 and v2["HasAns_total"] == 2


# ---- MCQ -------------------------------------------------------------------------------------------------------

def test_normalize_choice():
    assert normalize_choice(" b. ") == "B"
    assert normalize_choice("(C)") == "C"
    assert normalize_choice("D) the fourth one") == "D"
    assert normalize_choice("  ") is None
    assert normalize_choice(None) is None
    assert normalize_choice("Hà  Nội") == "hà nội"


def test_mcq_accuracy():
    got = mcq_accuracy(["A", "B", "C", "D", "A"], ["a", "B.", None, "", "C"])
    assert got == {"accuracy": 0.4, "correct": 2, "total": 5, "invalid": 2}
    assert mcq_accuracy([], []) == {"accuracy": 0.0, "correct": 0, "total": 0, "invalid": 0}
    with pytest.raises(ValueError):
        mcq_accuracy(["A"], [])


def test_mcq_generation_quality():
    good = format_mcq("Which is a fruit?", ["apple", "chair", "river", "cloud"], 0)
    outputs = [
        good,
        good.replace("Answer: A", "Answer: F"),
        "A. x\nB. y\nC. z\nD. w\nAnswer: A",
        "Question: Only two?\nA. yes\nB. no",
        None,
    ]
    got = mcq_generation_quality(outputs)
    assert got["total"] == 5 and got["valid"] == 1 and got["valid_rate"] == 0.2
    assert got["failures"] == {"missing_question": 2, "wrong_option_count": 2, "missing_key": 2,
                               "key_not_an_option": 1}


def test_mcq_generation_quality_prefix_kwargs():
    text = format_mcq("Câu hỏi ngắn?", ["một", "hai", "ba", "bốn"], 2, question_prefix="Câu hỏi:",
                      answer_prefix="Đáp án:")
    assert mcq_generation_quality([text])["valid"] == 0
    got = mcq_generation_quality([text], question_prefix="Câu hỏi:", answer_prefix="Đáp án:")
    assert got == {"total": 1, "valid": 1, "valid_rate": 1.0, "failures": {}, "nested_options": 0,
                   "near_duplicate_options": 0}


def test_mcq_generation_quality_content_proxies():
    """Over the valid MCQs: options nested in one another (near-copies) and keys found in the context."""
    ok = format_mcq("Which is a fruit?", ["apple", "chair", "river", "cloud"], 0)
    nested = format_mcq("Which is a fruit?", ["apple", "an apple", "apple pie", "cloud"], 2)
    broken = nested.replace("Answer: C", "")  # invalid: not counted as nested
    contexts = ["An apple fell.", "Clouds and rivers.", "Apple pie."]
    got = mcq_generation_quality([ok, nested, broken], contexts)
    assert (got["valid"], got["nested_options"], got["key_in_context"], got["usable"]) == (2, 1, 1, 1)
    # usable: valid, grounded and not nested (a grounded key among nested options is not)
    got = mcq_generation_quality([ok, nested, nested], [*contexts[:2], "I like apple pie."])
    assert (got["nested_options"], got["key_in_context"], got["usable"], got["usable_rate"]) == (2, 2, 1, 1 / 3)
    assert "key_in_context" not in mcq_generation_quality([ok])


def test_mcq_generation_quality_counts_near_duplicate_options():
    """Two options that differ by a word are no better distractors for not being nested: counted, and not
    `usable_distinct` (the exam's own VNHSGE questions have them on 10 of 200)."""
    close = format_mcq("Câu hỏi?", ["Bảo vệ quyền lợi người tiêu dùng.", "Bảo vệ môi trường.",
                                   "Bảo vệ quyền lợi của người tiêu dùng.", "Bảo vệ tài sản công."], 2,
                       question_prefix="Câu hỏi:", answer_prefix="Đáp án:")
    apart = close.replace("Bảo vệ quyền lợi người tiêu dùng.", "Nộp thuế đúng hạn.")
    ctx = ["phải bảo vệ quyền lợi của người tiêu dùng."] * 2
    got = mcq_generation_quality([close, apart], ctx, "vi", question_prefix="Câu hỏi:", answer_prefix="Đáp án:")
    assert (got["nested_options"], got["near_duplicate_options"]) == (0, 1)
    assert (got["usable"], got["usable_distinct"], got["usable_distinct_rate"]) == (2, 1, 0.5)
