"""Every supported row shape and file type loads into the same Example; bad rows are counted and fatal
past the threshold. Format variants are written to tmp files from real rows (nothing invented)."""

from __future__ import annotations

import csv
import json

import pytest

from trainables.data.formats import BadRows, DataNotFound, load_examples, load_with_report, read_rows
from trainables.schema.data import DataConfig


def _alpaca_rows(data_file, n=20):
    return read_rows(data_file("alpaca/alpaca_en_demo.json"))[:n]


def _expected_prompt(row):
    return row["instruction"].strip() + ("\n\n" + row["input"].strip() if row["input"].strip() else "")


def test_alpaca_fastchat_and_lima_files(data_file):
    rows = _alpaca_rows(data_file)
    ex = load_examples("alpaca/alpaca_en_demo.json")
    assert len(ex) == 999
    assert ex[0].messages == [{"role": "user", "content": _expected_prompt(rows[0])},
                              {"role": "assistant", "content": rows[0]["output"]}]
    assert ex[0].id == "alpaca_en_demo.json#0"  # no id column: file + row
    fastchat = load_examples("instruct/filtered_evol_instruct_1k_score.json")
    raw = read_rows(data_file("instruct/filtered_evol_instruct_1k_score.json"))
    assert fastchat[0].id == raw[0]["id"] and fastchat[0].score == raw[0]["score"]
    assert not fastchat[0].messages[0]["content"].startswith("Below is an instruction")
    lima = load_examples("eval/lima_test.jsonl")  # conversations as plain strings: prompts only -> all bad
    assert lima == []


@pytest.mark.parametrize("shape", ["messages", "prompt_completion"])
def test_messages_and_prompt_completion_from_real_rows(tmp_path, data_file, shape):
    rows = _alpaca_rows(data_file)
    if shape == "messages":
        out = [{"messages": [{"role": "user", "content": _expected_prompt(r)},
                             {"role": "assistant", "content": r["output"]}]} for r in rows]
    else:
        out = [{"prompt": _expected_prompt(r), "completion": r["output"]} for r in rows]
    path = tmp_path / f"{shape}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    ex = load_examples(str(path))
    assert [e.prompt_text for e in ex] == [_expected_prompt(r) for r in rows]
    assert [e.response_text for e in ex] == [r["output"] for r in rows]


def test_json_file_holding_json_lines_and_jsonl(tmp_path, data_file):
    rows = _alpaca_rows(data_file)
    for name in ("lines.json", "lines.jsonl"):
        (tmp_path / name).write_text("\n".join(json.dumps(r) for r in rows))
        assert [e.response_text for e in load_examples(str(tmp_path / name))] == [r["output"] for r in rows]


def test_parquet_from_real_rows(tmp_path, data_file):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = read_rows(data_file("alpaca/filtered_alpaca_1k_longest.json"))[:15]
    flat = [{"id": r["id"], "score": r["score"], "question": r["conversations"][0]["value"],
             "answer": r["conversations"][1]["value"]} for r in rows]
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "pool.parquet")
    ex = load_examples(str(tmp_path / "pool.parquet"), fields={"prompt": "question", "completion": "answer"})
    ref = load_examples("alpaca/filtered_alpaca_1k_longest.json")[:15]
    assert [(e.id, e.score, e.messages) for e in ex] == [(e.id, e.score, e.messages) for e in ref]


def test_csv_with_field_mapping(data_file):
    with open(data_file("domain_en/medical/medquad.csv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    ex = load_examples("domain_en/medical/medquad.csv", fields={"instruction": "question", "output": "answer"})
    good = [r for r in rows if r["question"].strip() and r["answer"].strip()]
    assert len(ex) == len(good)
    assert ex[0].prompt_text == good[0]["question"] and ex[0].response_text == good[0]["answer"]
    assert ex[0].category == good[0]["focus_area"] and ex[0].meta["source"] == good[0]["source"]


def test_chinese_law_files_nested_lists_and_other_columns(data_file):
    advice = load_examples("domain_zh/law/legal_advice.json")  # items are one-element lists
    raw = read_rows(data_file("domain_zh/law/legal_advice.json"))
    assert len(advice) == len(raw) == 5000
    assert advice[0].prompt_text == raw[0][0]["instruction"] and advice[0].response_text == raw[0][0]["output"]
    zixun = load_examples("domain_zh/law/zixun_gpt4.json", fields={"instruction": "query", "output": "response"})
    zraw = read_rows(data_file("domain_zh/law/zixun_gpt4.json"))
    assert len(zixun) == 1000 and zixun[3].response_text == zraw[3]["response"]
    fakao = load_examples("domain_zh/law/fakao_gpt4.json")  # {input, output, type}: input is the prompt
    assert len(fakao) == 1000 and fakao[0].category


def test_bad_rows_counted_with_examples_and_threshold(tmp_path, data_file):
    rows = _alpaca_rows(data_file, 20)
    broken = [dict(r) for r in rows]
    broken[2]["output"] = ""
    del broken[5]["output"]
    broken[7] = ["not", "a", "row"]
    text = "\n".join(json.dumps(r) for r in broken) + "\n{not json\n"
    path = tmp_path / "broken.jsonl"
    path.write_text(text)
    ex, report = load_with_report(str(path))
    assert len(ex) == 17 and report.rows == 21 and report.n_bad == 4
    assert report.bad["no assistant response"] == 1 and report.bad["missing output"] == 1
    assert any("row 2" in s for s in report.samples)
    assert len(load_examples(str(path), max_bad_fraction=0.25)) == 17  # 4/21 tolerated
    with pytest.raises(BadRows) as e:
        load_examples(str(path), max_bad_fraction=0.05)
    msg = str(e.value)
    assert "4 of 21 rows" in msg and "missing output" in msg and "max_bad_fraction" in msg


def test_unmappable_file_fails_clearly_in_prepare():
    from trainables.data.pipeline import load_pool

    with pytest.raises(BadRows) as e:
        load_pool(DataConfig(train="domain_zh/law/zixun_gpt4.json"))
    assert "1000 of 1000" in str(e.value) and "data.fields" in str(e.value)
    with pytest.raises(ValueError, match="unknown field name"):
        DataConfig(fields={"questoin": "q"})


@pytest.mark.slow
def test_hub_id_errors_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataNotFound) as e:
        load_examples("hf:tatsu-lab/alpaca")
    assert "tatsu-lab/alpaca" in str(e.value) and "local path" in str(e.value)


def test_broken_json_array_and_single_object_fail_with_the_place(tmp_path, data_file):
    text = data_file("alpaca/alpaca_en_demo.json").read_text(encoding="utf-8")
    broken = tmp_path / "broken.json"
    broken.write_text(text[:2000].rstrip().rstrip(",") + ",\n  {oops}\n]", encoding="utf-8")
    with pytest.raises(BadRows) as e:
        load_examples(str(broken))
    assert str(e.value).startswith(f"{broken}: not valid JSON at line ") and "column" in str(e.value)
    single = tmp_path / "single.json"
    single.write_text(json.dumps({"data": _alpaca_rows(data_file, 3)}, indent=2), encoding="utf-8")
    with pytest.raises(BadRows, match="holds one JSON object \\(keys data\\), not a list of rows"):
        load_examples(str(single))
