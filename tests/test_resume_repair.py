"""harness/resume.py on a saved Ray Tune state laid out as Ray 2.60 writes it (trial_data: pairs of JSON
strings), with checkpoint directories on disk: which checkpoint each unfinished trial goes on from. The
real kill -9 and --resume run in tests/test_reliability.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.resume import repair


def saved(tune_dir: Path, trials: dict[str, tuple[str, str | None, list[int]]]) -> None:
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
        # stopped early by the scheduler after the last saved state (its .ended marker): from its newest
        # checkpoint too, where it only says its last report again (it must not train on to its rung again)
        "cut": ("RUNNING", "checkpoint_000000", [0, 1]),
        # the saved checkpoint pruned since: the newest takes its name, the ones between go
        "pruned": ("PENDING", "checkpoint_000001", [0, 3, 4]),
        # ended in the saved state: untouched
        "done": ("TERMINATED", "checkpoint_000001", [0, 1]),
    })
    notes = repair(tune_dir, finished={"ended", "cut", "done"})

    assert checkpoints(tune_dir, "ended") == {"checkpoint_000001": "report 2", "checkpoint_000002": "report 4"}
    assert checkpoints(tune_dir, "half") == {f"checkpoint_{i:06d}": f"report {i + 1}" for i in range(3)}
    assert checkpoints(tune_dir, "cut") == {"checkpoint_000000": "report 2"}
    assert checkpoints(tune_dir, "pruned") == {"checkpoint_000000": "report 1", "checkpoint_000001": "report 5"}
    assert checkpoints(tune_dir, "done") == {"checkpoint_000000": "report 1", "checkpoint_000001": "report 2"}
    assert notes == [
        "trial ended: had ended after the last saved state; it reports its last result again from its final "
        "checkpoint_000003",
        "trial cut: had ended after the last saved state; it reports its last result again from its final "
        "checkpoint_000001",
        "trial pruned: checkpoint_000001 had been pruned after the last saved state; it goes on from its newer "
        "checkpoint_000004",
    ]


def test_a_trial_that_failed_after_the_last_saved_state_stays_failed(tune_dir):
    saved(tune_dir, {"failed": ("RUNNING", "checkpoint_000001", [0, 1]), "half": ("RUNNING", "checkpoint_000001", [0, 1])})
    assert repair(tune_dir, failed={"failed"}) == ["trial failed: had failed after the last saved state; kept as failed"]
    state = json.loads(next(tune_dir.glob("experiment_state-*.json")).read_text())
    assert {json.loads(t)["trial_id"]: json.loads(t)["status"] for t, _ in state["trial_data"]} == {
        "failed": "ERROR", "half": "RUNNING"}


def test_which_trials_had_ended_by_the_drivers_records(tmp_path):
    """The driver marks a trial ended the moment it ends (trials/<id>/.ended, before Ray changes its
    status); a final report in its history counts too, and so does results.csv."""
    from harness.results import write_csv
    from harness.resume import ended_trials

    def trial(trial_id: str, marker: str | None = None, reports: tuple[int, ...] = ()) -> None:
        d = tmp_path / "trials" / trial_id
        d.mkdir(parents=True)
        if marker is not None:
            (d / ".ended").write_text(marker)
        (d / "metrics.jsonl").write_text("".join(json.dumps({"report": r, "step": r, "total_steps": 4}) + "\n"
                                                 for r in reports))

    trial("complete", "complete", (1, 2, 3, 4))
    trial("stopped", "complete", (1, 2))        # stopped early by the scheduler
    trial("older", "", (1, 2))                  # an empty marker (written by earlier versions): ended
    trial("final", None, (1, 2, 3, 4))          # killed between its last report and the marker
    trial("failed", "error", (1,))
    trial("half", None, (1, 2, 3))
    trial("csv", None, (1,))
    write_csv(tmp_path / "results.csv", [{"trial_id": "csv", "status": "TERMINATED"},
                                         {"trial_id": "half", "status": "RUNNING"}])
    assert ended_trials(tmp_path) == ({"complete", "stopped", "older", "final", "csv"}, {"failed"})


def test_a_pruned_checkpoint_with_nothing_newer_is_left_to_ray(tune_dir):
    saved(tune_dir, {"lost": ("RUNNING", "checkpoint_000003", [0, 1])})
    assert repair(tune_dir, finished={"lost"}) == []
    assert checkpoints(tune_dir, "lost") == {"checkpoint_000000": "report 1", "checkpoint_000001": "report 2"}


def test_a_state_restored_from_rays_staging_copy_brings_its_searcher_along(tmp_path, monkeypatch):
    """The copy in tune/ was cut by the kill, and its searcher is older than Ray's staging copy (it does not
    know the last trial suggested): both come from the staging directory, which Ray wrote together."""
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    stamp = "2026-12-01_12-13-20"
    staging = tmp_path / "ray" / "session_1" / "artifacts" / stamp / "tune" / "driver_artifacts"
    tune_dir = tmp_path / "tune"
    for d, searcher in ((staging, "knows trials 1-3"), (tune_dir, "knows trials 1-2")):
        d.mkdir(parents=True)
        (d / f"experiment_state-{stamp}.json").write_text('{"trial_data": []}')
        (d / f"searcher-state-{stamp}.pkl").write_text(searcher)
        (d / f"search_gen_state-{stamp}.json").write_text(searcher)
    (tune_dir / f"experiment_state-{stamp}.json").write_text('{"trial_da')  # cut mid-copy
    (tune_dir / "searcher-state-2026-12-01_09-00-00.pkl").write_text("an earlier session's: left alone")

    notes = repair(tune_dir)

    assert notes == [f"experiment_state-{stamp}.json was cut short by the kill; restored Ray's complete copy from "
                     f"{staging / f'experiment_state-{stamp}.json'}"]
    assert (tune_dir / f"experiment_state-{stamp}.json").read_text() == '{"trial_data": []}'
    assert (tune_dir / f"searcher-state-{stamp}.pkl").read_text() == "knows trials 1-3"
    assert (tune_dir / f"search_gen_state-{stamp}.json").read_text() == "knows trials 1-3"
    assert (tune_dir / "searcher-state-2026-12-01_09-00-00.pkl").read_text() == "an earlier session's: left alone"


def test_checkpoints_pruned_since_the_saved_state_are_forgotten(tune_dir):
    """Ray's checkpoint list (its _CheckpointManager, pickled into the state) as a lagging saved state
    holds it: checkpoint_000000 was deleted by keep-best-k since. Left in the list, Ray deletes it again at
    the trial's next checkpoint: "Error handling checkpoint ... FileNotFoundError" (seen on --resume)."""
    from ray import cloudpickle
    from ray._common.utils import binary_to_hex, hex_to_binary
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult

    saved(tune_dir, {"t": ("RUNNING", "checkpoint_000002", [1, 2])})
    trial_dir = tune_dir / "train_trial_t"
    manager = _CheckpointManager(CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="eval_loss",
                                                   checkpoint_score_order="min"))
    for i, loss in ((0, 3.0), (1, 2.0), (2, 1.0)):
        result = _TrainingResult(checkpoint=Checkpoint(str(trial_dir / f"checkpoint_{i:06d}")),
                                 metrics={"eval_loss": loss})
        manager._checkpoint_results.append(result)  # worst first, as Ray keeps it
        manager._latest_checkpoint_result = result
    state_file = next(tune_dir.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    meta = json.loads(state["trial_data"][0][1])
    meta["checkpoint_manager"] = {"_type": "CLOUDPICKLE_FALLBACK", "value": binary_to_hex(cloudpickle.dumps(manager))}
    state["trial_data"][0][1] = json.dumps(meta)
    state_file.write_text(json.dumps(state))

    repair(tune_dir)

    meta = json.loads(json.loads(state_file.read_text())["trial_data"][0][1])
    restored = cloudpickle.loads(hex_to_binary(meta["checkpoint_manager"]["value"]))
    assert [Path(r.checkpoint.path).name for r in restored._checkpoint_results] == ["checkpoint_000001",
                                                                                    "checkpoint_000002"]
    (trial_dir / "checkpoint_000003").mkdir()  # the trial's next checkpoint: Ray prunes the worst, no error
    restored.register_checkpoint(_TrainingResult(checkpoint=Checkpoint(str(trial_dir / "checkpoint_000003")),
                                                 metrics={"eval_loss": 0.5}))
    assert sorted(d.name for d in trial_dir.iterdir()) == ["checkpoint_000002", "checkpoint_000003"]


def test_a_trial_the_saved_state_names_no_checkpoint_of_goes_on_from_its_newest(tune_dir):
    """Ray saves its state every 10 s or more: a kill can find a trial's first checkpoints on disk while
    the state lists none (seen in the packed kill-and-resume test: the trial trained again from step 0).
    Its newest whole checkpoint (a cut state.pt does not count) is listed, the trial's checkpoint count
    follows it, and the older ones go; a trial with a listed checkpoint is left as it is."""
    import torch
    from ray import cloudpickle
    from ray._common.utils import binary_to_hex, hex_to_binary
    from ray.train import Checkpoint, CheckpointConfig
    from ray.train._internal.checkpoint_manager import _CheckpointManager
    from ray.train._internal.session import _TrainingResult
    from ray.train._internal.storage import StorageContext

    saved(tune_dir, {"new": ("RUNNING", None, [0, 1, 2]), "listed": ("RUNNING", "checkpoint_000000", [0, 1])})
    for i in (0, 1):  # whole checkpoints, as Session.report writes them
        torch.save({"step": i + 1, "metrics": {"report": i + 1, "eval_loss": 2.0 - i}},
                   tune_dir / f"train_trial_new/checkpoint_{i:06d}/state.pt")
    whole = (tune_dir / "train_trial_new/checkpoint_000001/state.pt").read_bytes()
    (tune_dir / "train_trial_new/checkpoint_000002/state.pt").write_bytes(whole[: len(whole) // 2])  # cut by the kill

    def pickled(obj) -> dict:
        return {"_type": "CLOUDPICKLE_FALLBACK", "value": binary_to_hex(cloudpickle.dumps(obj))}

    state_file = next(tune_dir.glob("experiment_state-*.json"))
    state = json.loads(state_file.read_text())
    for entry in state["trial_data"]:
        trial, meta = json.loads(entry[0]), json.loads(entry[1])
        storage = StorageContext(str(tune_dir.parent), tune_dir.name, trial_dir_name=trial["relative_logdir"])
        manager = _CheckpointManager(CheckpointConfig(num_to_keep=2, checkpoint_score_attribute="eval_loss",
                                                      checkpoint_score_order="min"))
        if trial["trial_id"] == "listed":
            storage.current_checkpoint_index = 0
            manager.register_checkpoint(_TrainingResult(Checkpoint(f"{storage.trial_fs_path}/checkpoint_000000"),
                                                        {"eval_loss": 1.0}))
        trial["storage"], meta["checkpoint_manager"] = pickled(storage), pickled(manager)
        entry[:2] = json.dumps(trial), json.dumps(meta)
    state_file.write_text(json.dumps(state))

    notes = repair(tune_dir)

    assert notes == ["trial new: the saved state named none of its checkpoints; it goes on from checkpoint_000001 "
                     "(report 2)"]
    assert sorted(d.name for d in (tune_dir / "train_trial_new").iterdir()) == ["checkpoint_000001"]
    assert checkpoints(tune_dir, "listed") == {"checkpoint_000000": "report 1", "checkpoint_000001": "report 2"}
    trial, meta = (json.loads(x) for x in json.loads(state_file.read_text())["trial_data"][0][:2])
    storage = cloudpickle.loads(hex_to_binary(trial["storage"]["value"]))
    manager = cloudpickle.loads(hex_to_binary(meta["checkpoint_manager"]["value"]))
    latest = manager.latest_checkpoint_result
    assert latest.checkpoint.path == f"{storage.trial_fs_path}/checkpoint_000001"
    assert latest.metrics["eval_loss"] == 1.0 and latest.metrics["checkpoint_dir_name"] == "checkpoint_000001"
    assert storage.current_checkpoint_index == 1 and storage.checkpoint_dir_name == "checkpoint_000001"
    assert repair(tune_dir) == []  # listed now: a second repair changes nothing
