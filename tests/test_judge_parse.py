"""Judge prompt filling and tolerant score parsing."""

from __future__ import annotations

import pytest

from trainables.evaluate.judge_prompts import PAIRWISE, check_template, fill, parse_pair, parse_single


@pytest.mark.parametrize("text, expected", [
    ("8 6\nAssistant 1 is more detailed.", (8, 6)),
    ("**7 9**\nexplanation", (7, 9)),
    ("8/10 7/10", (8, 7)),
    ("Scores: 8.5, 6", (8.5, 6)),
    ("\n\n  9 3  \n", (9, 3)),
    ("Assistant 1: 7\nAssistant 2: 4\nBecause ...", (7, 4)),
    ("Assistant 1 receives a score of 6 and Assistant 2 receives 9.", (6, 9)),
    ("Assistant 1's score: 5 out of 10\nAssistant 2's score: 8 out of 10", (5, 8)),
])
def test_pair_parses(text, expected):
    assert parse_pair(text) == expected


@pytest.mark.parametrize("text", ["", None, "banana", "8\nno second", "Both are good.", "11 12", "7 8 9"])
def test_pair_unparseable(text):
    assert parse_pair(text) is None


@pytest.mark.parametrize("text, expected", [
    ("Rating: 7\nok", 7), ("Rating: [[8]]", 8), ("[[9]]", 9), ("Score = 6.5", 6.5), ("I give it 4/10.", 4),
    ("7\nbecause", 7), ("**Rating:** 3", 3),
])
def test_single_parses(text, expected):
    assert parse_single(text) == expected


@pytest.mark.parametrize("text", ["", None, "great answer", "Rating: 42", "7 or 8"])
def test_single_unparseable(text):
    assert parse_single(text) is None


def test_fill_is_one_pass_and_keeps_other_braces():
    out = fill("Q={question} A={answer} json={\"k\": 1}", question="{answer}", answer="x")
    assert out == "Q={answer} A=x json={\"k\": 1}"
    assert "{answer_1}" not in fill(PAIRWISE, question="q", answer_1="a", answer_2="b")


def test_check_template():
    check_template(PAIRWISE, "pairwise")
    with pytest.raises(ValueError, match="answer_1"):
        check_template("{question} {answer}", "pairwise")
    check_template("{question} {answer}", "single")
