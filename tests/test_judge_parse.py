"""Reading verdicts out of judge replies: schema-constrained JSON and the text forms (two scores, a
rating, MT-bench's [[A]] / [[B]] / [[C]] and [[rating]])."""

from __future__ import annotations

import pytest

from trainables.evaluate.judge_parse import parse_ab, parse_pair, parse_single, parse_verdict
from trainables.evaluate.judge_prompts import PAIR_SCORES, RATING, VERDICT, verdict_schema


@pytest.mark.parametrize("text, expected", [
    ("8 6\nAssistant 1 is more detailed.", (8, 6)),
    ("**7 9**\nexplanation", (7, 9)),
    ("8/10 7/10", (8, 7)),
    ("Scores: 8.5, 6", (8.5, 6)),
    ("\n\n  9 3  \n", (9, 3)),
    ("Assistant 1: 7\nAssistant 2: 4\nBecause ...", (7, 4)),
    ("Assistant A: 7\nAssistant B: 4", (7, 4)),
    ("Assistant 1 receives a score of 6 and Assistant 2 receives 9.", (6, 9)),
    ("Assistant 1's score: 5 out of 10\nAssistant 2's score: 8 out of 10", (5, 8)),
    ("Both are fine, A is a bit better. [[8, 6]]", (8, 6)),
])
def test_pair_parses(text, expected):
    assert parse_pair(text) == expected


@pytest.mark.parametrize("text", ["", None, "banana", "8\nno second", "Both are good.", "11 12", "7 8 9"])
def test_pair_unparseable(text):
    assert parse_pair(text) is None


@pytest.mark.parametrize("text, expected", [
    ("Rating: 7\nok", 7), ("Rating: [[8]]", 8), ("[[9]]", 9), ("Score = 6.5", 6.5), ("I give it 4/10.", 4),
    ("7\nbecause", 7), ("**Rating:** 3", 3), ("The answer is decent.\nRating: [[7.5]]", 7.5),
])
def test_single_parses(text, expected):
    assert parse_single(text) == expected


@pytest.mark.parametrize("text", ["", None, "great answer", "Rating: 42", "7 or 8"])
def test_single_unparseable(text):
    assert parse_single(text) is None


@pytest.mark.parametrize("text, expected", [
    ("A is more accurate. [[A]]", "A"), ("[[B]]", "B"), ("Both equal: [[C]]", "C"), ("[[tie]]", "C"),
    ("Final verdict: [[ b ]]", "B"), ("[[A]] ... so, again, [[A]]", "A"),
])
def test_ab_verdicts_parse(text, expected):
    assert parse_ab(text) == expected


@pytest.mark.parametrize("text", [
    None, "", "A is better.", "[[D]]",
    # an echo of MT-bench's instructions names every verdict: no verdict can be read from it
    'output "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie',
])
def test_ab_unparseable(text):
    assert parse_ab(text) is None


@pytest.mark.parametrize("kind, text, expected", [
    (RATING, '{"rating": 7}', 7), (RATING, '```json\n{"rating": 4}\n```', 4),
    (PAIR_SCORES, '{"score_a": 8, "score_b": 3}', (8, 3)), (VERDICT, '{"verdict": "B"}', "B"),
    (VERDICT, '{"verdict": "c"}', "C"),
    # not the schema's JSON: the text forms still read it
    (RATING, "Rating: [[6]]", 6), (VERDICT, "[[A]]", "A"), (PAIR_SCORES, "9 2", (9, 2)),
])
def test_structured_and_text_verdicts(kind, text, expected):
    assert parse_verdict(kind, text) == expected


@pytest.mark.parametrize("kind, text", [
    (RATING, '{"rating": 42}'), (RATING, '{"score": 7, "rating": null}'), (VERDICT, '{"verdict": "D"}'),
    (PAIR_SCORES, '{"score_a": 8}'), (RATING, '{"rating": 7'),  # cut short by max_tokens
])
def test_structured_unparseable(kind, text):
    assert parse_verdict(kind, text) is None


def test_schemas_are_closed_objects_of_the_verdict_alone():
    assert verdict_schema(RATING) == {"type": "object", "properties": {"rating": {"type": "integer",
                                      "enum": list(range(1, 11))}}, "required": ["rating"],
                                      "additionalProperties": False}
    assert verdict_schema(PAIR_SCORES)["required"] == ["score_a", "score_b"]
    assert verdict_schema(VERDICT)["properties"]["verdict"]["enum"] == ["A", "B", "C"]
