"""The MCQ-generation layout: writing it, reading it back, and naming each way it can be broken."""

from __future__ import annotations

import pytest

from genqa.data.mcq_format import (
    DUPLICATE_OPTIONS,
    EMPTY_OPTION,
    INLINE_OPTIONS,
    KEY_NOT_AN_OPTION,
    MISSING_KEY,
    MISSING_QUESTION,
    PREFIXES,
    WRONG_OPTION_COUNT,
    ParsedMCQ,
    format_mcq,
    parse_mcq,
)

VI_Q, VI_A = PREFIXES["vi"]


def test_format_exact_layout():
    text = format_mcq("Which planet is red?", ["Venus", "Mars", "Jupiter", "Saturn"], 1)
    assert text == "Question: Which planet is red?\nA. Venus\nB. Mars\nC. Jupiter\nD. Saturn\nAnswer: B"


def test_format_custom_prefixes_and_labels():
    text = format_mcq("Q?", ["x", "y", "z"], 2, labels=["1", "2", "3"], question_prefix="Q:", answer_prefix="K:")
    assert text == "Q: Q?\n1. x\n2. y\n3. z\nK: 3"


def test_format_collapses_option_whitespace():
    text = format_mcq("Q?", ["one\ntwo", " a  b ", "c", "d"], 0)
    assert "A. one two\nB. a b\n" in text


@pytest.mark.parametrize(
    ("options", "index"),
    [(["a", "b", "c"], 0), (["a", "b", "c", "d"], 4), (["a", "b", "c", "d"], -1), (["a", " ", "c", "d"], 0)],
)
def test_format_rejects_bad_input(options, index):
    with pytest.raises(ValueError):
        format_mcq("Q?", options, index)


def test_round_trip_english():
    text = format_mcq("How many legs does a spider have?", ["six", "eight", "ten", "four"], 1)
    parsed = parse_mcq(text)
    assert parsed == ParsedMCQ("How many legs does a spider have?", ["six", "eight", "ten", "four"], "B", 1, [])
    assert parsed.ok


def test_round_trip_vietnamese():
    options = ["Sông Hồng", "Sông Mê Kông", "Sông Đà", "Sông Hương"]
    text = format_mcq("Con sông nào chảy qua thành phố Huế?", options, 3, question_prefix=VI_Q, answer_prefix=VI_A)
    parsed = parse_mcq(text, question_prefix=VI_Q, answer_prefix=VI_A)
    assert parsed.ok
    assert parsed.options == options
    assert (parsed.answer_label, parsed.answer_index) == ("D", 3)


def test_tolerant_parse():
    text = (
        "Đây là câu hỏi bạn cần:\r\n"
        "\r\n"
        "  Câu hỏi :   Món ăn nào được làm   từ gạo?  \r\n"
        "A)  Phở\r\n"
        "B: Bánh mì\r\n"
        "(C) Bơ\r\n"
        "D.Sữa chua\r\n"
        "Đáp án: A.\r\n"
        "Giải thích: phở dùng bánh phở làm từ gạo.\r\n"
    )
    parsed = parse_mcq(text, question_prefix=VI_Q, answer_prefix=VI_A)
    assert parsed.errors == []
    assert parsed.question == "Món ăn nào được làm   từ gạo?"
    assert parsed.options == ["Phở", "Bánh mì", "Bơ", "Sữa chua"]
    assert parsed.answer_index == 0


@pytest.mark.parametrize("key", ["C", "C.", " C ", "(C)", "C)", "c", "C. Oslo", "**C**"])
def test_key_variants(key):
    text = f"Question: Capital of Norway?\nA. Bergen\nB. Bergenx\nC. Oslo\nD. Tromso\nAnswer: {key}"
    parsed = parse_mcq(text)
    assert parsed.ok, parsed.errors
    assert parsed.answer_label == "C"


def test_multiline_question_and_wrapped_option():
    text = ("Question: Read the line below.\nWhich word is a verb?\nA. run\nB. blue\nC. table\nD. quickly and\n"
            "slowly\nAnswer: A")
    parsed = parse_mcq(text)
    assert parsed.ok
    assert parsed.question == "Read the line below. Which word is a verb?"
    assert parsed.options[3] == "quickly and slowly"


def test_full_width_colon_and_case_insensitive_prefix():
    parsed = parse_mcq("QUESTION： Two plus two?\nA. 3\nB. 4\nC. 5\nD. 6\nanswer： B")
    assert parsed.ok and parsed.answer_index == 1


GOOD_OPTIONS = "A. red\nB. green\nC. blue\nD. black\n"


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("A. red\nB. green\nC. blue\nD. black\nAnswer: A", MISSING_QUESTION),
        ("Question:   \n" + GOOD_OPTIONS + "Answer: A", MISSING_QUESTION),
        ("Question: Sky colour?\nA. red\nB. green\nC. blue\nAnswer: A", WRONG_OPTION_COUNT),
        ("Question: Sky colour?\n" + GOOD_OPTIONS + "E. white\nAnswer: A", WRONG_OPTION_COUNT),
        ("Question: Sky colour?\nA. red\nB. green\nB. blue\nD. black\nAnswer: A", WRONG_OPTION_COUNT),
        ("Question: Sky colour?\nA. red\nB. \nC. blue\nD. black\nAnswer: A", EMPTY_OPTION),
        ("Question: Sky colour?\nA. red\nB. Blue\nC. blue.\nD. black\nAnswer: A", DUPLICATE_OPTIONS),
        ("Question: Sky colour?\nA. red\nB. green. C. green. D. green.\nC. blue\nD. black\nAnswer: A", INLINE_OPTIONS),
        ("Question: Sky colour?\nA. red\nB. green\nC. C. blue\nD. black\nAnswer: A", INLINE_OPTIONS),
        ("Question: Sky colour?\nA. red\nB. green; D.\nC. blue\nD. black\nAnswer: A", INLINE_OPTIONS),
        ("Question: Sky colour?\nA. red\nB. green\nC. blue\nD. black. E. black\nAnswer: A", INLINE_OPTIONS),
        ("Question: Sky colour?\nA. red\nB. green or what? C. green\nC. blue\nD. black\nAnswer: A", INLINE_OPTIONS),
        ("Question: Sky colour?\n" + GOOD_OPTIONS, MISSING_KEY),
        ("Question: Sky colour?\n" + GOOD_OPTIONS + "Answer:   ", MISSING_KEY),
        ("Question: Sky colour?\n" + GOOD_OPTIONS + "Answer: E", KEY_NOT_AN_OPTION),
        ("Question: Sky colour?\n" + GOOD_OPTIONS + "Answer: blue", KEY_NOT_AN_OPTION),
        ("Question: Sky colour?\nA. red\nB. green\nC. blue\nAnswer: D", KEY_NOT_AN_OPTION),
    ],
)
def test_broken_layouts(text, code):
    parsed = parse_mcq(text)
    assert code in parsed.errors
    assert not parsed.ok


def test_key_not_an_option_leaves_no_label():
    parsed = parse_mcq("Question: Sky colour?\n" + GOOD_OPTIONS + "Answer: E")
    assert parsed.errors == [KEY_NOT_AN_OPTION]
    assert parsed.answer_label is None and parsed.answer_index is None


def test_garbage_and_empty_text():
    for text in ["", "I cannot write a question about this.", None]:
        parsed = parse_mcq(text)
        assert parsed.errors == [MISSING_QUESTION, WRONG_OPTION_COUNT, MISSING_KEY]


def test_english_prefix_does_not_match_vietnamese_output():
    text = format_mcq("Câu hỏi thử?", ["một", "hai", "ba", "bốn"], 0, question_prefix=VI_Q, answer_prefix=VI_A)
    assert not parse_mcq(text).ok
    assert parse_mcq(text, question_prefix=VI_Q, answer_prefix=VI_A).ok


def test_option_text_naming_people_by_letter_is_not_inline_options():
    """Civic-education questions name people by letter (`anh A`, `ông C`); only a label after `.` `;` `:` `?` `!`
    (or at the start) and before a space or the end marks options written inline."""
    options = ["Anh A, ông B và anh D.", "Chị C và anh A.", "Ông B, anh C và anh D.", "Anh A và ông B."]
    text = format_mcq("Những ai vi phạm?", options, 0, question_prefix=VI_Q, answer_prefix=VI_A)
    assert parse_mcq(text, question_prefix=VI_Q, answer_prefix=VI_A).ok
    with pytest.raises(ValueError, match="another option's label"):
        format_mcq("Q?", ["red", "green. C. blue", "blue", "black"], 0)
