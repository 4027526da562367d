"""`python -m genqa.evaluate` through `main([...])`: SQuAD JSON + CSV/JSON predictions, MCQ, MCQ generation, errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from genqa.data.mcq_format import format_mcq
from genqa.data.sources import squad_question_id
from genqa.evaluate import main

SQUAD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "squad"


def _write_squad(path: Path, *, with_ids: bool = True, v2: bool = True) -> Path:
    qas = [
        {"question": "Who painted the mural?", "answers": [{"text": "Marta Ruiz", "answer_start": 0}]},
        {"question": "In which year?", "answers": [{"text": "2004", "answer_start": 30}]},
    ]
    if v2:
        qas[0]["is_impossible"] = qas[1]["is_impossible"] = False
        qas.append({"question": "Who paid for it?", "answers": [], "is_impossible": True})
    if with_ids:
        for i, qa in enumerate(qas):
            qa["id"] = f"m{i}"
    context = "Marta Ruiz painted the mural in 2004 on the library wall."
    path.write_text(json.dumps({"version": "t", "data": [{"title": "Mural", "paragraphs": [
        {"context": context, "qas": qas}]}]}), encoding="utf-8")
    return path


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _run(argv: list[str], capsys) -> dict:
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_squad_v2_json_with_csv_predictions(tmp_path, capsys):
    data = _write_squad(tmp_path / "dev.json")
    preds = _write_csv(tmp_path / "preds.csv", ["id", "answer"], [["m0", "Marta"], ["m1", "2004"], ["m2", ""]])
    out = tmp_path / "out" / "metrics.json"
    got = _run(["--data", str(data), "--predictions", str(preds), "--out", str(out)], capsys)
    assert list(got) == ["exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total", "NoAns_exact",
                         "NoAns_f1", "NoAns_total"]
    assert got["total"] == 3 and got["exact"] == 100.0 * 2 / 3
    assert got["f1"] == 100.0 * (2 / 3 + 1 + 1) / 3
    assert got["NoAns_exact"] == 100.0
    assert json.loads(out.read_text(encoding="utf-8")) == got


def test_squad_v1_auto_detect_and_generated_ids(tmp_path, capsys):
    data = _write_squad(tmp_path / "dev.json", with_ids=False, v2=False)
    ids = [squad_question_id(0, 0, 0), squad_question_id(0, 0, 1)]
    assert ids == ["0-0-0", "0-0-1"]
    preds = tmp_path / "preds.json"
    preds.write_text(json.dumps({ids[0]: "marta ruiz."}), encoding="utf-8")
    got = _run(["--data", str(data), "--predictions", str(preds), "--task", "extractive"], capsys)
    assert got == {"exact_match": 50.0, "f1": 50.0}  # v1.1: the missing prediction counts 0


def test_forced_version_and_custom_columns(tmp_path, capsys):
    data = _write_squad(tmp_path / "dev.json", v2=False)
    preds = _write_csv(tmp_path / "p.csv", ["qid", "text"], [["m0", "Marta Ruiz"], ["m1", "2004"]])
    got = _run(["--data", str(data), "--predictions", str(preds), "--task", "squad_v2", "--id_column", "qid",
                "--answer_column", "text"], capsys)
    assert got == {"exact": 100.0, "f1": 100.0, "total": 2, "HasAns_exact": 100.0, "HasAns_f1": 100.0,
                   "HasAns_total": 2}


def test_vietnamese_lang_option(tmp_path, capsys):
    import unicodedata

    data = tmp_path / "vi.json"
    data.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Hồ Gươm nằm ở Hà Nội.", "qas": [
        {"id": "v1", "question": "Hồ Gươm ở đâu?", "answers": [{"text": "Hà Nội", "answer_start": 14}]}]}]}]},
        ensure_ascii=False), encoding="utf-8")
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"v1": unicodedata.normalize("NFD", "Hà Nội")}), encoding="utf-8")
    assert _run(["--data", str(data), "--predictions", str(preds)], capsys)["exact_match"] == 0.0
    assert _run(["--data", str(data), "--predictions", str(preds), "--lang", "vi"], capsys)["exact_match"] == 100.0


def test_mcq_task(tmp_path, capsys):
    dev = _write_csv(tmp_path / "dev.csv", ["id", "answer"], [["1", "A"], ["2", "C"], ["3", "D"], ["4", "B"]])
    preds = _write_csv(tmp_path / "pred.csv", ["id", "answer"], [["1", "A"], ["2", "c."], ["3", "B"]])
    got = _run(["--task", "mcq", "--data", str(dev), "--predictions", str(preds)], capsys)
    assert got == {"accuracy": 0.5, "correct": 2, "total": 4, "invalid": 1, "missing": 1}


def test_mcq_generation_task(tmp_path, capsys):
    good = format_mcq("Cây nào cho quả dừa?", ["cây dừa", "cây tre", "cây thông", "cây lúa"], 0,
                      question_prefix="Câu hỏi:", answer_prefix="Đáp án:")
    rows = [{"id": 1, "answer": good}, {"id": 2, "answer": good.replace("Đáp án: A", "")}]
    preds = tmp_path / "gen.jsonl"
    preds.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8")
    got = _run(["--task", "mcq_generation", "--predictions", str(preds), "--lang", "vi"], capsys)
    assert got == {"total": 2, "valid": 1, "valid_rate": 0.5, "failures": {"missing_key": 1}, "nested_options": 0,
                   "near_duplicate_options": 0}


def _error(argv: list[str], capsys) -> str:
    """Run the CLI on a user mistake: exit code 2 (returned, or from argparse) and the message on stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    return capsys.readouterr().err


def test_error_missing_file(tmp_path, capsys):
    err = _error(["--data", str(tmp_path / "nope.json"), "--predictions", str(tmp_path / "p.csv")], capsys)
    assert "nope.json" in err and "not found" in err


def test_out_under_a_file_is_refused_before_scoring(tmp_path, capsys):
    data = _write_squad(tmp_path / "dev.json")
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"m0": "Marta Ruiz"}), encoding="utf-8")
    (tmp_path / "afile").write_text("mine")
    err = _error(["--data", str(data), "--predictions", str(preds), "--out", str(tmp_path / "afile" / "m.json")],
                 capsys)
    assert "afile is a file" in err and "Traceback" not in err


@pytest.mark.parametrize("task", [[], ["--task", "extractive"]])
def test_table_golds_get_the_hint_of_their_case(tmp_path, capsys, task):
    gold = _write_csv(tmp_path / "gold.csv", ["id", "answer"], [["q1", "Marta Ruiz"]])
    preds = tmp_path / "p.json"
    preds.write_text(json.dumps({"q1": "Marta Ruiz"}), encoding="utf-8")
    err = _error(["--data", str(gold), "--predictions", str(preds), *task], capsys)
    assert "is a table (.csv), not SQuAD JSON" in err and "official SQuAD JSON layout" in err
    assert ("--task mcq --recipe RECIPE.yaml" in err) == (not task)  # an extractive user is not sent to mcq first


def test_error_missing_column(tmp_path, capsys):
    data = _write_squad(tmp_path / "dev.json")
    preds = _write_csv(tmp_path / "preds.csv", ["id", "prediction"], [["m0", "Marta"]])
    err = _error(["--data", str(data), "--predictions", str(preds)], capsys)
    assert "'answer'" in err and "preds.csv" in err and "--answer_column" in err


def test_extra_ids_ignored_with_a_warning_refused_under_strict(tmp_path, capsys):
    """As the official scripts: ids not in the dev file are ignored (counted, named); --strict refuses them."""
    data = _write_squad(tmp_path / "dev.json")
    preds = _write_csv(tmp_path / "preds.csv", ["id", "answer"],
                       [["m0", "Marta Ruiz"], ["m1", "2004"], ["m2", ""], ["zz9", "x"], ["zz8", "y"]])
    got = _run(["--data", str(data), "--predictions", str(preds)], capsys)
    assert got["exact"] == 100.0 and got["total"] == 3
    main(["--data", str(data), "--predictions", str(preds)])
    err = capsys.readouterr().err
    assert "2 of 5 ids" in err and "'zz9'" in err and "ignored" in err
    err = _error(["--data", str(data), "--predictions", str(preds), "--strict"], capsys)
    assert "'zz9'" in err and "preds.csv" in err and "dev.json" in err and "--strict" in err


def test_no_id_in_common_is_refused(tmp_path, capsys):
    data = _write_squad(tmp_path / "dev.json")
    preds = _write_csv(tmp_path / "preds.csv", ["id", "answer"], [["zz9", "x"]])
    err = _error(["--data", str(data), "--predictions", str(preds)], capsys)
    assert "'zz9'" in err and "nothing to score" in err


@pytest.mark.parametrize("v2", [False, True])
def test_missing_predictions_score_zero_in_both_versions(tmp_path, capsys, v2):
    data = _write_squad(tmp_path / "dev.json", v2=v2)
    preds = _write_csv(tmp_path / "preds.csv", ["id", "answer"], [["m0", "Marta Ruiz"]])
    assert main(["--data", str(data), "--predictions", str(preds)]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out)
    n = 3 if v2 else 2
    assert got["exact" if v2 else "exact_match"] == 100.0 / n
    assert f"{n - 1} of {n} questions have no prediction" in captured.err
    if v2:  # the official v2.0 script would leave m1/m2 out and crash on the empty NoAns group
        assert got["total"] == 3 and got["NoAns_total"] == 1 and got["NoAns_exact"] == 0.0
    err = _error(["--data", str(data), "--predictions", str(preds), "--strict"], capsys)
    assert "have no prediction" in err and "--subset predicted" in err


def test_subset_predicted_scores_exactly_the_predicted_ids(tmp_path, capsys):
    data = _write_squad(tmp_path / "dev.json")
    preds = _write_csv(tmp_path / "preds.csv", ["id", "answer"], [["m0", "Marta Ruiz"], ["m2", ""]])
    assert main(["--data", str(data), "--predictions", str(preds), "--subset", "predicted", "--strict"]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out)
    assert got["total"] == 2 and got["exact"] == 100.0 and got["HasAns_total"] == 1
    assert "1 of the 3 questions" in captured.err and "left out" in captured.err


@pytest.mark.parametrize("value", [True, 3, ["a"], {"t": "a"}])
def test_non_string_prediction_names_the_id(tmp_path, capsys, value):
    data = _write_squad(tmp_path / "dev.json")
    (tmp_path / "p.json").write_text(json.dumps({"m0": "Marta", "m1": value}), encoding="utf-8")
    err = _error(["--data", str(data), "--predictions", str(tmp_path / "p.json")], capsys)
    assert "'m1'" in err and "not a string" in err and "p.json" in err


def test_error_duplicate_prediction_id_and_squad_as_predictions(tmp_path, capsys):
    data = _write_squad(tmp_path / "dev.json")
    preds = _write_csv(tmp_path / "preds.csv", ["id", "answer"], [["m0", "a"], ["m0", "b"]])
    assert "more than once" in _error(["--data", str(data), "--predictions", str(preds)], capsys)
    assert "looks like a SQuAD dataset" in _error(["--data", str(data), "--predictions", str(data)], capsys)


def test_real_squad_v2_through_cli(tmp_path, capsys):
    dev, preds = SQUAD / "dev-v2.0.json", SQUAD / "t5-small-zero-shot.dev-v2.0.predictions.json"
    if not (dev.is_file() and preds.is_file()):
        pytest.skip(f"shared data not available: {SQUAD}")
    got = _run(["--data", str(dev), "--predictions", str(preds)], capsys)
    assert got["exact"] == 34.42263960245936 and got["f1"] == 39.5366934720806 and got["total"] == 11873


def test_repeated_ids_match_generate_renaming(tmp_path, capsys):


    data = {"data": [{"title": "t", "paragraphs": [{"context": "Red apples and green pears.", "qas": [
        {"id": "q1", "question": "Apples?", "answers": [{"text": "Red", "answer_start": 0}]},
        {"id": "q1", "question": "Pears?", "answers": [{"text": "green", "answer_start": 15}]}]}]}]}
    (tmp_path / "d.json").write_text(json.dumps(data), encoding="utf-8")
    (tmp_path / "p.json").write_text(json.dumps({"q1": "Red", "q1#2": "green"}), encoding="utf-8")
    assert main(["--data", str(tmp_path / "d.json"), "--predictions", str(tmp_path / "p.json")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exact_match"] == 100.0


def test_generate_predictions_jsonl_header_is_skipped(tmp_path, capsys):


    path = tmp_path / "gen.csv.predictions.jsonl"
    path.write_text(json.dumps({"genqa_fingerprint": {"base": "x"}}) + "\n"
                    + json.dumps({"id": "1", "answer": "Question: Q?\nA. a\nB. b\nC. c\nD. d\nAnswer: B"}) + "\n",
                    encoding="utf-8")
    assert main(["--task", "mcq_generation", "--predictions", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["valid"] == 1


def test_mcq_golds_mapped_through_a_recipe(tmp_path, capsys):
    """Golds written as option texts / option column names score like generate's own metric when a recipe is given."""
    import pandas as pd

    root = Path(__file__).resolve().parents[1]
    frame = pd.read_excel(root / "data/tiny/zh_mcq.xlsx", dtype=str).head(3)
    frame.loc[0, "正確答案"] = frame.loc[0, "選項" + frame.loc[0, "正確答案"]]   # the option's text
    frame.loc[1, "正確答案"] = "選項" + frame.loc[1, "正確答案"]                  # the option's column name
    frame.to_csv(tmp_path / "dev.csv", index=False)
    gold = pd.read_excel(root / "data/tiny/zh_mcq.xlsx", dtype=str).head(3)
    pd.DataFrame({"ID": gold["ID"], "Answer": gold["正確答案"]}).to_csv(tmp_path / "pred.csv", index=False)
    args = ["--task", "mcq", "--data", str(tmp_path / "dev.csv"), "--predictions", str(tmp_path / "pred.csv"),
            "--id_column", "ID", "--answer_column", "Answer"]
    assert main([*args, "--recipe", str(root / "recipes/tiny/mcq.yaml")]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0
    assert main([*args, "--gold_column", "正確答案", "--labels", "1,2,3,4"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["accuracy"] < 1.0 and "2 gold answers are not option labels" in captured.err


def test_mcq_label_set_comes_from_recipe_or_labels_not_predictions(tmp_path, capsys):
    """Predictions that are all "C" used to make every other gold look like a non-label."""
    golds = _write_csv(tmp_path / "dev.csv", ["id", "answer"], [["1", "A"], ["2", "B"], ["3", "C"], ["4", "D"]])
    preds = _write_csv(tmp_path / "p.csv", ["id", "answer"], [["1", "C"], ["2", "C"], ["3", "C"], ["4", "Z"]])
    args = ["--task", "mcq", "--data", str(golds), "--predictions", str(preds)]
    assert main([*args, "--labels", "A,B,C,D"]) == 0
    captured = capsys.readouterr()
    got = json.loads(captured.out)
    assert got["correct"] == 1 and got["invalid"] == 1  # "Z" is not a label
    assert "not option labels" not in captured.err
    assert main(args) == 0  # no label set given: nothing inferred, no warning
    assert "not option labels" not in capsys.readouterr().err


def test_mcq_extra_ids_and_subset(tmp_path, capsys):
    golds = _write_csv(tmp_path / "dev.csv", ["id", "answer"], [["1", "A"], ["2", "B"], ["3", "C"]])
    preds = _write_csv(tmp_path / "p.csv", ["id", "answer"], [["1", "A"], ["9", "B"]])
    args = ["--task", "mcq", "--data", str(golds), "--predictions", str(preds)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["total"] == 3 and "'9'" in captured.err
    assert main([*args, "--subset", "predicted"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got == {"accuracy": 1.0, "correct": 1, "total": 1, "invalid": 0, "missing": 0}
    assert "'9'" in _error([*args, "--strict"], capsys)
