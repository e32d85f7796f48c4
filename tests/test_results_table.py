"""results.csv read back by the driver (best.yaml, the summary): numbers as numbers, ids as text."""

from __future__ import annotations

import json

import yaml

from harness.results import read_rows, write_best, write_csv


def test_trial_ids_that_look_like_numbers_stay_text_and_best_yaml_names_the_trial(tmp_path):
    # Ray's trial ids are 5 hex characters + "_" + a counter; "4e095_00000" is a float to Python
    # (4e9500000 = inf). A real sweep once crashed on it at the end (best.yaml: Path / float).
    rows = [
        {"trial_id": "4e095_00000", "status": "TERMINATED", "node_id": "1e50" + "0" * 52, "seed": 0,
         "config/train.lr": 0.003, "eval_loss": 1.88404, "tokens_seen": 2156},
        {"trial_id": "4e095_00001", "status": "EARLY_STOPPED", "node_id": "1e50" + "0" * 52, "seed": 0,
         "config/train.lr": 1e-7, "eval_loss": 1.98175, "tokens_seen": 539},
    ]
    write_csv(tmp_path / "results.csv", rows)
    for r in rows:
        (tmp_path / "trials" / r["trial_id"]).mkdir(parents=True)
        (tmp_path / "trials" / r["trial_id"] / "config.json").write_text(json.dumps({"train": {"lr": r["config/train.lr"]}}))

    back = read_rows(tmp_path / "results.csv")
    assert [r["trial_id"] for r in back] == ["4e095_00000", "4e095_00001"]
    assert back[0]["node_id"] == rows[0]["node_id"] and back[0]["status"] == "TERMINATED"
    assert back[0]["eval_loss"] == 1.88404 and back[1]["tokens_seen"] == 539 and back[1]["config/train.lr"] == 1e-7

    best = write_best(tmp_path, back, "eval_loss", "min")
    doc = yaml.safe_load((tmp_path / "best.yaml").read_text())
    assert best["trial_id"] == doc["trial_id"] == "4e095_00000"
    assert doc["value"] == 1.88404 and doc["config"] == {"train": {"lr": 0.003}}


def test_no_results_file_reads_as_no_rows(tmp_path):
    assert read_rows(tmp_path / "results.csv") == []


def test_a_trial_is_recorded_as_ended_the_moment_it_ends(tmp_path):
    """Ray 2.60 calls on_trial_complete / on_trial_error before it changes the trial's status (measured:
    RUNNING for 0.05-0.42 s), so the row follows the driver's .ended marker, not the status."""
    from types import SimpleNamespace

    from harness.results import trial_row

    (tmp_path / "error.txt").write_text('Failure # 1\n  File "/w/trainables/qlora.py", line 9, in train_loop\n'
                                        "OSError: boom\n")
    last = {"step": 4, "total_steps": 4, "eval_loss": 1.5}

    def row(status: str, ended: str | None, result: dict = last) -> dict:
        trial = SimpleNamespace(trial_id="t1", status=status, config={}, last_result=result, error_file=None,
                                run_metadata=SimpleNamespace(num_failures=1))
        return trial_row(trial, [], [], 4, ended=ended, error_copy=tmp_path / "error.txt")

    assert row("RUNNING", "complete")["status"] == "TERMINATED"
    assert row("RUNNING", "complete", {"step": 2, "total_steps": 4})["status"] == "EARLY_STOPPED"
    failed = row("RUNNING", "error")
    assert (failed["status"], failed["error_type"], failed["error"]) == (
        "ERROR", "OSError", "OSError: boom (at qlora.py:9 in train_loop)")
    assert row("RUNNING", None)["status"] == "RUNNING"
    assert row("TERMINATED", None, {"step": 2, "total_steps": 4})["status"] == "INTERRUPTED"  # Ctrl-C


def test_the_writer_validates_the_search_space_once_not_on_every_write(tmp_path, monkeypatch):
    from harness.config import load_sweep
    from harness.results import ResultsWriter
    from trainables.schema import SearchConfig

    cfg, _ = load_sweep("sweeps/lora_rank.yaml")
    writer = ResultsWriter(tmp_path, ["lora.r"], [], cfg.reports_per_trial, cfg.model_dump())
    calls = []
    real = SearchConfig.model_validate
    monkeypatch.setattr(SearchConfig, "model_validate", lambda v: calls.append(1) or real(v))
    for _ in range(3):
        assert writer.rows([]) == []
    assert len(calls) == 1 and writer.space["lora.alpha"].tie == "lora.r"
