"""The real public data sets in ../shared/data load through genqa's sources and tasks (skipped when absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from genqa.config import QAArguments
from genqa.data.sources import DataError, load_source
from genqa.data.splits import grouped_split
from genqa.data.tasks import get_task

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is absent")

KAGGLE = dict(task="mcq", context_column="文章", question_column="問題", answer_column="正確答案",
              options_columns=["選項1", "選項2", "選項3", "選項4"], option_labels=["1", "2", "3", "4"])


def _canonical(path: str, require_answer: bool = True, **kw):
    task = get_task(QAArguments(**kw))
    return task.to_canonical(load_source(str(DATA / path))["train"], path, require_answer=require_answer)


@pytest.mark.parametrize("name,n", [("c3-d-dev", 1825), ("c3-m-test", 2002)])
def test_c3(name, n):
    rows = _canonical(f"c3/{name}.json", task="mcq", options_column="choice", answer_column="answer")
    assert len(rows) == n and all(0 <= lab < len(opts) for lab, opts in zip(rows["label"], rows["options"],
                                                                            strict=True))


def test_kaggle_train_and_test_sheets():
    with pytest.raises(DataError, match=r"AI.xlsx row 1899 \(id 2463\): option 2 is empty"):
        _canonical("kaggle_zh_mcq/AI.xlsx", id_column="ID", **KAGGLE)  # two options merged into one cell
    train = _canonical("kaggle_zh_mcq/AI.xlsx", id_column="ID", on_bad_row="skip", **KAGGLE)
    assert len(train) == 13549 and set(train["label"]) == {0, 1, 2, 3}
    test = _canonical("kaggle_zh_mcq/AI1000.xlsx", require_answer=False, id_column="題號", **KAGGLE)
    assert len(test) == 1000 and set(test["label"]) == {-1} and len(set(test["id"])) == 1000


@pytest.mark.parametrize("name,n,unanswerable", [("uit-viquad-v1.0-dev", 2285, 0),
                                                 ("uit-viquad-v2.0-train-fold0-dev-0", 3960, 1325)])
def test_viquad(name, n, unanswerable):
    rows = _canonical(f"viquad/{name}.json", task="extractive")
    assert len(rows) == n and sum(not a for a in rows["answers"]) == unanswerable
    for r in rows.select(range(200)):
        for text, start in zip(r["answers"], r["answer_starts"], strict=True):
            assert r["context"][start:start + len(text)] == text


def test_xlmr_save_to_disk_folder():
    rows = _canonical("xlmr_vi_qa/valid.dataset", task="extractive", answer_column="answer_text",
                      answer_start_column="answer_start_idx")
    assert len(rows) == 1547


def test_vietnamese_exam_options_inside_questions():
    total = 0
    for path in sorted((DATA / "vnhsge").rglob("*.json")):
        rows = _canonical(str(path.relative_to(DATA)), task="mcq", id_column="ID", context_column=None,
                          question_column="Question", answer_column="Choice", options_in_question=True,
                          on_bad_row="skip")
        assert all(len(o) == 4 for o in rows["options"])
        total += len(rows)
    assert total >= 590  # 600 questions; a few have options that are not laid out as lines


def test_squad_split_has_no_context_leak():
    data = load_source(str(DATA / "squad/dev-v2.0.json"))["train"]
    assert len(data) == 11873 and sum(data["is_impossible"]) == 5945
    train, val = grouped_split(data, 0.1, 0, "context")
    assert not set(train["context"]) & set(val["context"])
    assert 0.05 * len(data) < len(val) < 0.15 * len(data)
