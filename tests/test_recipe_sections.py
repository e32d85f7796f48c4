"""analysis/recipe_sections.py on synthetic trial files (no model): the length-controlled judge score
separates "this trial writes longer answers" from "this trial's answers are better"."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis.recipe_sections import companions, length_controlled


def test_length_controlled_score_removes_a_pure_length_advantage():
    # Trial L writes 100 words more than trial Q on every question; the judge adds 2 points per 100 words.
    # Q's answers are 1 point better at equal length. Raw scores favour L; controlled ones favour Q.
    rows = []
    for i in range(8):
        ref = 50 + 10 * i
        for trial, extra, quality in (("L", 100 + 5 * (i % 3), 5.0), ("Q", 0 + 5 * (i % 2), 6.0)):
            words = ref + extra
            rows.append({"trial": trial, "id": f"q{i}", "score": quality + 2.0 * (words - ref) / 100,
                         "words": words, "ref_words": ref})
    table, slope = length_controlled(pd.DataFrame(rows))
    got = table.set_index("trial")
    assert got.loc["L", "judge score"] > got.loc["Q", "judge score"]
    assert slope == pytest.approx(2.0, abs=1e-6)
    assert got.loc["L", "length-controlled score"] == pytest.approx(5.0, abs=1e-6)
    assert got.loc["Q", "length-controlled score"] == pytest.approx(6.0, abs=1e-6)


def test_without_references_lengths_are_compared_per_question():
    rows = [{"trial": t, "id": f"q{i}", "score": s, "words": w, "ref_words": float("nan")}
            for i in range(4) for t, s, w in (("a", 4.0 + i % 2, 10 + i), ("b", 4.0 + i % 2, 10 + i))]
    table, slope = length_controlled(pd.DataFrame(rows))
    assert table["length-controlled score"].isna().all()
    assert json.dumps(list(table["answers"])) == "[4, 4]"
    # identical lengths per question: nothing to regress on, said rather than guessed
    assert slope != slope


def test_perplexity_objective_brings_its_token_weighted_companion():
    assert companions("ppl_mean_public_test") == ["ppl_mean_public_test", "ppl_public_test"]
    assert companions("mcq_law_acc") == ["mcq_law_acc"]
