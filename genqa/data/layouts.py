"""JSON data layouts: SQuAD (v1.1 / v2.0), C3 and plain record files, recognised and checked before any reader runs.

Every check here names the file, the place in it (`data[3].paragraphs[0].qas[7] (id 'q7')`, `document 12`,
`line 40`) and what is wrong, so that a malformed file never reaches a reader that would fail with a bare
`KeyError`, an `ArrowInvalid` or (datasets' JSON reader on a file holding `null`) a segmentation fault.
Hand-written because the official SQuAD layout has no schema a library checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from genqa.errors import DataError


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


# ---- SQuAD -------------------------------------------------------------------------------------------------------
def is_squad_json(data: Any) -> bool:
    """True for the official SQuAD layout: `{"data": [{"paragraphs": [{"context", "qas"}]}]}`."""
    return (isinstance(data, dict) and isinstance(data.get("data"), list)
            and all(isinstance(a, dict) and "paragraphs" in a for a in data["data"][:5]))


def squad_question_id(article: int, paragraph: int, question: int) -> str:
    """Id given to a SQuAD-layout question that has none (UIT-ViQuAD 1.0): `article-paragraph-question`."""
    return f"{article}-{paragraph}-{question}"


def _answer_start(value: Any, where: str) -> int:
    if value is None:
        return -1
    if isinstance(value, bool) or not isinstance(value, int | str) or (
            isinstance(value, str) and not value.strip().lstrip("-").isdigit()):
        raise DataError(f"{where}: `answer_start` is {value!r}; it must be a whole number (the answer's character "
                        "offset in the context).")
    return int(value)


def _squad_answers(qa: dict[str, Any], where: str) -> tuple[list[str], list[int]]:
    answers = qa.get("answers")
    if answers is None:
        return [], []
    if not isinstance(answers, list):
        raise DataError(f"{where}: `answers` is a {_kind(answers)}; it must be a list of {{\"text\", "
                        "\"answer_start\"}} objects ([] for an unanswerable question).")
    texts, starts = [], []
    for i, answer in enumerate(answers):
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str):
            got = f"has no `text` string (got {answer!r})" if isinstance(answer, dict) else f"is a {_kind(answer)}"
            raise DataError(f"{where}: answers[{i}] {got}; each answer is {{\"text\": ..., \"answer_start\": ...}}.")
        texts.append(answer["text"])
        starts.append(_answer_start(answer.get("answer_start"), f"{where}: answers[{i}]"))
    return texts, starts


def _squad_qa_row(qa: Any, a: int, p: int, q: int, context: str, title: str, where: str) -> dict[str, Any]:
    place = f"{where}: data[{a}].paragraphs[{p}].qas[{q}]"
    if not isinstance(qa, dict):
        raise DataError(f"{place} is a {_kind(qa)}, not a question object {{\"id\", \"question\", \"answers\"}}.")
    qid = qa.get("id")
    if qid is not None and not isinstance(qid, str | int) or isinstance(qid, bool):
        raise DataError(f"{place}: `id` is {qid!r}; write it as a string.")
    place += f" (id {qid!r})" if qid is not None else ""
    if not isinstance(qa.get("question"), str):
        problem = "has no `question`" if "question" not in qa else f"has a {_kind(qa['question'])} `question`"
        raise DataError(f"{place} {problem}; every question needs a `question` string.")
    texts, starts = _squad_answers(qa, place)
    flagged = qa.get("is_impossible", False)
    if not isinstance(flagged, bool):
        raise DataError(f"{place}: `is_impossible` is {flagged!r}; write true or false.")
    if flagged and texts:
        raise DataError(f"{place}: `is_impossible` is true but it has {len(texts)} answer(s) ({texts[0]!r}); an "
                        "unanswerable question has `answers: []` (SQuAD 2.0 keeps such spans in "
                        "`plausible_answers`). Fix one of the two.")
    impossible = flagged or not texts
    return {"id": str(qid if qid not in (None, "") else squad_question_id(a, p, q)), "title": title,
            "context": context, "question": qa["question"], "answers": [] if impossible else texts,
            "answer_starts": [] if impossible else starts, "is_impossible": impossible}


def _squad_paragraphs(article: Any, a: int, where: str) -> list[Any]:
    if not isinstance(article, dict):
        raise DataError(f"{where}: data[{a}] is a {_kind(article)}, not an article {{\"title\", \"paragraphs\"}}.")
    paragraphs = article.get("paragraphs", [])
    if not isinstance(paragraphs, list):
        raise DataError(f"{where}: data[{a}].paragraphs is a {_kind(paragraphs)}; it must be a list.")
    return paragraphs


def iter_squad_rows(data: dict[str, Any], source: str = "<squad>") -> Iterator[dict[str, Any]]:
    """Flatten SQuAD v1.1 / v2.0 JSON into rows: id, title, context, question, answers, answer_starts, is_impossible.

    Every article, paragraph, question and answer is checked; a malformed one raises a `DataError` naming `source`
    and its place (`data[a].paragraphs[p].qas[q]` and the question id)."""
    for a, article in enumerate(data["data"]):
        for p, para in enumerate(_squad_paragraphs(article, a, source)):
            place = f"{source}: data[{a}].paragraphs[{p}]"
            if not isinstance(para, dict) or "context" not in para or "qas" not in para:
                raise DataError(f"{place} has no `context` or `qas`; not a SQuAD layout.")
            if not isinstance(para["context"], str):
                raise DataError(f"{place}: `context` is a {_kind(para['context'])}; it must be a string.")
            if not isinstance(para["qas"], list):
                raise DataError(f"{place}: `qas` is a {_kind(para['qas'])}; it must be a list of questions.")
            title = article.get("title", "")
            for q, qa in enumerate(para["qas"]):
                yield _squad_qa_row(qa, a, p, q, para["context"], "" if title is None else str(title), source)


def squad_examples(data: dict[str, Any], source: str = "<squad>") -> list[tuple[str, list[str]]]:
    """`(qid, gold answer texts)` in file order; an empty list marks an unanswerable question."""
    return [(row["id"], row["answers"]) for row in iter_squad_rows(data, source)]


def squad_version(data: dict[str, Any]) -> int:
    """2 when any question of the SQuAD JSON carries an `is_impossible` key (the v2.0 layout), else 1."""
    return 2 if any(isinstance(qa, dict) and "is_impossible" in qa
                    for article in data["data"] if isinstance(article, dict)
                    for para in article.get("paragraphs") or [] if isinstance(para, dict)
                    for qa in para.get("qas") or []) else 1


# ---- C3 ----------------------------------------------------------------------------------------------------------
def is_c3_json(data: Any) -> bool:
    """True for the C3 layout: `[[passage sentences], [{question, choice, answer}], doc_id]` documents."""
    return (isinstance(data, list) and bool(data) and isinstance(data[0], list) and len(data[0]) == 3
            and isinstance(data[0][0], list) and isinstance(data[0][1], list))


def _c3_question(item: Any, place: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise DataError(f"{place} is a {_kind(item)}, not a {{\"question\", \"choice\", \"answer\"}} object.")
    if not isinstance(item.get("question"), str):
        raise DataError(f"{place}: `question` is missing or not a string (got {item.get('question')!r}).")
    choice = item.get("choice")
    if not isinstance(choice, list) or not all(isinstance(c, str | int | float) and not isinstance(c, bool)
                                               for c in choice):
        raise DataError(f"{place}: `choice` must be a list of option strings, got {choice!r}.")
    answer = item.get("answer", "")
    if not isinstance(answer, str | int | float) or isinstance(answer, bool):
        raise DataError(f"{place}: `answer` must be the text of an option, got {answer!r}.")
    return {"question": item["question"], "choice": [str(c) for c in choice], "answer": str(answer)}


def c3_rows(data: list[Any], source: str = "<c3>") -> list[dict[str, Any]]:
    """Rows id, context, question, choice, answer of C3 JSON; every document is checked to be
    `[sentences, questions, id]` (a `DataError` names the document, its id and the question otherwise)."""
    rows = []
    for d, doc in enumerate(data):
        if not (isinstance(doc, list) and len(doc) == 3 and isinstance(doc[0], list) and isinstance(doc[1], list)):
            raise DataError(f"{source}: document {d} is not [sentences, questions, id] (got "
                            f"{_kind(doc)}{f' of {len(doc)} items' if isinstance(doc, list) else ''}); every C3 "
                            "document is a list of sentence strings, a list of questions and an id.")
        sentences, items, doc_id = doc
        place = f"{source}: document {d} (id {doc_id!r})"
        if not all(isinstance(s, str) for s in sentences):
            raise DataError(f"{place}: the passage must be a list of sentence strings.")
        for q, item in enumerate(items):
            row = _c3_question(item, f"{place} question {q}")
            rows.append({"id": f"{doc_id}-{q}", "context": "\n".join(sentences), **row})
    return rows


# ---- plain JSON / JSON Lines records -----------------------------------------------------------------------------
def check_json_records(data: Any, source: str) -> None:
    """A plain .json data file must hold a list of row objects (or one object); a `null`, a bare value or a list
    holding anything but objects is refused here, naming the first bad element."""
    if isinstance(data, dict):
        return
    if not isinstance(data, list):
        raise DataError(f"{source}: the file holds a JSON {_kind(data)}; a data file holds a list of row objects "
                        "[{\"column\": value, ...}, ...].")
    if not data:
        raise DataError(f"{source}: the file holds an empty list; a data file holds at least one row object.")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(f"{source}: element {i} is a JSON {_kind(row)}, not a row object {{\"column\": value}}; "
                            "every element of the list must be one.")


def first_type_conflict(rows: list[dict[str, Any]], source: str, first_line: int = 0) -> str | None:
    """Where a column first changes its JSON type between rows (`row 7, column 'x': a string after numbers`),
    to explain a reader's `ArrowInvalid`; None when every column keeps one type (nulls aside)."""
    seen: dict[str, tuple[str, int]] = {}
    for n, row in enumerate(rows):
        for key, value in row.items():
            kind = "number" if isinstance(value, int | float) and not isinstance(value, bool) else _kind(value)
            if kind == "null":
                continue
            first = seen.setdefault(key, (kind, n))
            if first[0] != kind:
                return (f"{source}: row {n + first_line}, column {key!r} holds a {kind} where row "
                        f"{first[1] + first_line} holds a {first[0]}; give every row of a column the same type")
    return None
