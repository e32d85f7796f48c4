"""Dedup and decontamination on the real files; the counts reach prepare()'s stats."""

from __future__ import annotations

import re
from dataclasses import replace

from trainables.data.formats import load_examples, read_rows, strip_alpaca_preamble
from trainables.data.hygiene import decontaminate, dedup
from trainables.data.pipeline import prepare
from trainables.schema.data import DataConfig, SelectionConfig

EVAL = "eval/test_set_evol_instruct_150.json"


def _norm(text: str) -> str:  # independent of hygiene.normalize (ASCII data only)
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _eval_questions(data_file) -> set[str]:
    rows = read_rows(data_file(EVAL))
    return {_norm(strip_alpaca_preamble(r["conversations"][0]["value"])) for r in rows}


def test_decontamination_removes_the_known_overlaps(data_file):
    questions = _eval_questions(data_file)
    for pool_file in ("alpaca/random_9k.json", "alpaca/claude_t45.json", "instruct/filtered_evol_instruct_1k_score.json"):
        pool = load_examples(pool_file)
        overlap = {e.id for e in pool if _norm(e.prompt_text) in questions}
        assert overlap, pool_file  # the README: 1 to 4 per Alpaca subset
        kept, removed = decontaminate(pool, [EVAL], n=13)
        assert set(removed["decontam_exact"]) >= overlap
        assert len(kept) + sum(map(len, removed.values())) == len(pool)
        assert not {e.id for e in kept} & overlap


def test_ngram_overlap_inside_a_longer_text(data_file):
    long_q = max(read_rows(data_file(EVAL)), key=lambda r: len(r["conversations"][0]["value"]))
    question = strip_alpaca_preamble(long_q["conversations"][0]["value"])
    assert len(question.split()) >= 13
    pool = load_examples("alpaca/random_9k.json")[:50]
    # A real example whose response quotes the evaluation question mid-text: not exact, but 13-gram.
    leaked = replace(pool[0], id="leak", messages=[pool[0].messages[0], {
        "role": "assistant", "content": pool[0].response_text + " " + question + " " + pool[1].response_text}])
    kept, removed = decontaminate([*pool, leaked], [EVAL], n=13)
    assert removed["decontam_ngram"] == ["leak"] and len(kept) == 50
    kept, removed = decontaminate([*pool, leaked], [EVAL], n=0)  # exact only
    assert not removed["decontam_ngram"] and len(kept) == 51


def test_dedup_exact_and_normalized(data_file):
    pool = load_examples("alpaca/alpaca_en_demo.json")[:30]
    shouty = replace(pool[3], id="copy-normalized", messages=[
        {"role": "user", "content": "  " + pool[3].prompt_text.upper() + "!!"}, pool[4].messages[-1]])
    exact = replace(pool[5], id="copy-exact")
    data = [*pool, shouty, exact]
    kept, removed = dedup(data, "exact")
    assert removed == {"dup_exact": ["copy-exact"], "dup_normalized": []} and len(kept) == 31
    kept, removed = dedup(data, "normalized")
    assert removed == {"dup_exact": ["copy-exact"], "dup_normalized": ["copy-normalized"]} and len(kept) == 30
    assert dedup(data, "off")[0] == data


def test_prepare_reports_what_hygiene_removed(data_file):
    files = ["alpaca/filtered_alpaca_1k_score.json", "alpaca/filtered_alpaca_1k_longest.json"]
    both = [e for f in files for e in load_examples(f)]
    shared = len(both) - len({tuple((m["role"], m["content"]) for m in e.messages) for e in both})
    p = prepare(DataConfig(train=files, decontaminate=[EVAL], eval_size=10),
                SelectionConfig(strategy="first", n=5), seed=0, n_tokens=lambda e: 1)
    s = p.stats
    assert s["pool_rows"] == 2000 and s["removed_dup_exact"] == shared > 0
    assert s["removed_decontam_exact"] + s["removed_decontam_ngram"] >= 1
    assert s["pool_size"] == 2000 - sum(len(v) for v in p.removed.values()) - 10
    assert p.selected_ids == [e.id for e in p.train] and len(p.train) == 5


def test_sweep_decontaminates_against_its_own_eval_sets_and_keeps_the_held_out_rows():
    from harness.config import SweepConfig
    from trainables.data.pipeline import load_pool

    doc = {"name": "t", "data": {"train": "alpaca/random_9k.json", "eval_size": 16},
           "eval": {"generate": {"data": EVAL}}}
    cfg = SweepConfig.model_validate(doc)
    assert cfg.data.decontaminate == [EVAL]
    off = SweepConfig.model_validate({**doc, "data": {**doc["data"], "decontaminate_eval": False}})
    assert off.data.decontaminate == []
    clean, plain = load_pool(cfg.data), load_pool(off.data)
    assert sum(len(ids) for why, ids in clean.removed.items() if why.startswith("decontam")) >= 1
    assert len(clean.examples) < len(plain.examples)
    # The held-out rows do not depend on which eval sets a sweep decontaminates against.
    assert [e.id for e in clean.held_out] == [e.id for e in plain.held_out]
