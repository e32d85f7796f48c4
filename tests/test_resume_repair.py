"""harness/resume.py on a saved Ray Tune state laid out as Ray 2.60 writes it (trial_data: pairs of JSON
strings), with checkpoint directories on disk: which checkpoint each unfinished trial goes on from. The
real kill -9 and --resume run in tests/test_reliability.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.resume import repair


def saved(tune_dir: Path, trials: dict[str, tuple[str, str, list[int]]]) -> None:
    """trials: id -> (Ray's status, the checkpoint the saved state points at, checkpoints on disk)."""
    data = []
    for trial_id, (status, wanted, on_disk) in trials.items():
        trial = {"trial_id": trial_id, "status": status, "relative_logdir": f"train_trial_{trial_id}"}
        data.append([json.dumps(trial), json.dumps({"last_result": {"checkpoint_dir_name": wanted}})])
        for i in on_disk:
            ckpt = tune_dir / trial["relative_logdir"] / f"checkpoint_{i:06d}"
            ckpt.mkdir(parents=True)
            (ckpt / "state.pt").write_text(f"report {i + 1}")
    tune_dir.mkdir(exist_ok=True)
    (tune_dir / "experiment_state-2026-12-01_00-00-00.json").write_text(
        json.dumps({"trial_data": data, "runner_data": {}, "stats": {}}))


def checkpoints(tune_dir: Path, trial_id: str) -> dict[str, str]:
    return {d.name: (d / "state.pt").read_text() for d in sorted((tune_dir / f"train_trial_{trial_id}").iterdir())}


@pytest.fixture
def tune_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "no-ray"))  # no staging copies of Ray's to consider
    return tmp_path / "tune"


def test_each_unfinished_trial_goes_on_from_the_right_checkpoint(tune_dir):
    saved(tune_dir, {
        # finished after the last saved state (results.csv: TERMINATED): from its final checkpoint
        "ended": ("RUNNING", "checkpoint_000002", [1, 2, 3]),
        # half-way, its saved checkpoint still there: as saved, though a newer one exists
        "half": ("RUNNING", "checkpoint_000001", [0, 1, 2]),
        # stopped early after the last saved state (results.csv: EARLY_STOPPED): as saved, so that it
        # reports at its rung again and the scheduler stops it again
        "cut": ("RUNNING", "checkpoint_000000", [0, 1]),
        # the saved checkpoint pruned since: the newest takes its name, the ones between go
        "pruned": ("PENDING", "checkpoint_000001", [0, 3, 4]),
        # ended in the saved state: untouched
        "done": ("TERMINATED", "checkpoint_000001", [0, 1]),
    })
    notes = repair(tune_dir, finished={"ended", "done"})

    assert checkpoints(tune_dir, "ended") == {"checkpoint_000001": "report 2", "checkpoint_000002": "report 4"}
    assert checkpoints(tune_dir, "half") == {f"checkpoint_{i:06d}": f"report {i + 1}" for i in range(3)}
    assert checkpoints(tune_dir, "cut") == {"checkpoint_000000": "report 1", "checkpoint_000001": "report 2"}
    assert checkpoints(tune_dir, "pruned") == {"checkpoint_000000": "report 1", "checkpoint_000001": "report 5"}
    assert checkpoints(tune_dir, "done") == {"checkpoint_000000": "report 1", "checkpoint_000001": "report 2"}
    assert notes == [
        "trial ended: had finished after the last saved state; it reports its end again from its final "
        "checkpoint_000003",
        "trial pruned: checkpoint_000001 had been pruned after the last saved state; it goes on from its newer "
        "checkpoint_000004",
    ]


def test_a_pruned_checkpoint_with_nothing_newer_is_left_to_ray(tune_dir):
    saved(tune_dir, {"lost": ("RUNNING", "checkpoint_000003", [0, 1])})
    assert repair(tune_dir, finished={"lost"}) == []
    assert checkpoints(tune_dir, "lost") == {"checkpoint_000000": "report 1", "checkpoint_000001": "report 2"}
