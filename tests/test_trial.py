"""The training trial driven in-process through a fake session (no Ray): report points, the TrainState
checkpoint and resuming from it, a NaN failing for good. Real model (SmolLM2-135M), real data, tiny."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from trainables.schema import SweepConfig
from trainables.trial import TrainState, train_loop

TINY = {
    "name": "trial", "data": {"train": "alpaca/alpaca_en_demo.json", "eval_size": 4},
    "selection": {"n": 8}, "train": {"batch_size": 2, "max_seq_len": 128, "evals_per_epoch": 2, "lr": 1e-3},
    "wandb": {"enabled": False},
}  # 8 examples / batch 2 = 4 optimizer steps, reported at steps 2 and 4


def same(a: dict, b: dict) -> bool:
    """Equal metrics, NaN equal to NaN (a random subset's mean_score is NaN)."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def tiny(**train: float) -> SweepConfig:
    return SweepConfig.model_validate({**TINY, "train": {**TINY["train"], **train}})


class FakeSession:
    """One process, as trainables.distributed.Session, but reports and checkpoints stay in this test. A
    checkpoint goes through torch.save / torch.load as Ray's state.pt does."""

    trial_id, world_size, is_main = "t0", 1, True

    def __init__(self, checkpoint: dict | None = None):
        self.saved = self._roundtrip(checkpoint) if checkpoint else None
        self.reports: list[tuple[dict, dict | None]] = []

    @staticmethod
    def _roundtrip(state: dict) -> dict:
        buf = io.BytesIO()
        torch.save(state, buf)
        buf.seek(0)
        return torch.load(buf, weights_only=False)

    def step_share(self, batches):
        return batches

    def wrap(self, model):
        return model

    def all_sum(self, value):
        return float(value)

    def tagged(self, metrics):
        return {"node": "here", "world_size": 1, **metrics}

    def get_checkpoint(self):
        return self.saved

    def report(self, metrics, state=None):
        self.reports.append((self.tagged(metrics), self._roundtrip(state) if state else None))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    storage = tmp_path_factory.mktemp("full")
    session = FakeSession()
    train_loop(tiny(), storage=str(storage), tokens=("", {}), session=session)
    return storage, session


def test_the_trial_reports_at_its_points_and_checkpoints_a_train_state(full_run):
    storage, session = full_run
    metrics = [m for m, _ in session.reports]
    assert [m["report"] for m in metrics] == [1, 2] and [m["step"] for m in metrics] == [2, 4]
    assert all(math.isfinite(m["eval_loss"]) and math.isfinite(m["train_loss"]) for m in metrics)
    assert metrics[1]["best_eval_loss"] == min(m["eval_loss"] for m in metrics)
    for m, saved in session.reports:
        state = TrainState.from_dict(saved)
        assert state.step == m["step"] and same(state.metrics, m)  # the checkpoint holds the report as reported
        assert state.adapter and state.optimizer["state"] and state.rng is not None
    trial = storage / "trials" / "t0"
    selected = json.loads((trial / "selected_ids.json").read_text())
    assert 0 < len(selected) == metrics[0]["n_examples"] <= 8  # the subset that trained (too-long prompts out)
    assert (trial / "adapter" / "adapter_config.json").exists()  # saved at the end (output.save_adapter)


def test_a_trial_resumed_from_its_train_state_continues_as_if_never_stopped(full_run, tmp_path):
    _, done = full_run
    first_metrics, first_state = done.reports[0]
    session = FakeSession(checkpoint=first_state)
    train_loop(tiny(), storage=str(tmp_path), tokens=("", {}), session=session)
    assert [m["step"] for m, _ in session.reports] == [4]  # only what was left
    resumed, uninterrupted = session.reports[0][0], done.reports[1][0]
    assert resumed["resumed_from_report"] == 1
    # Same weights, optimizer moments, schedule and RNG: the same numbers as the run that never stopped.
    for key in ("eval_loss", "train_loss", "best_eval_loss", "tokens_seen", "lr"):
        assert resumed[key] == pytest.approx(uninterrupted[key], rel=1e-5, abs=1e-7), key


def test_a_finished_trial_resumed_says_its_last_report_again(full_run, tmp_path):
    _, done = full_run
    last_metrics, last_state = done.reports[-1]
    session = FakeSession(checkpoint=last_state)
    train_loop(tiny(), storage=str(tmp_path), tokens=("", {}), session=session)
    assert len(session.reports) == 1
    metrics, state = session.reports[0]
    assert state is None and same(metrics, {**last_metrics, "resumed_from_report": 2})


def test_a_nan_loss_fails_the_trial_and_its_retry_at_once(tmp_path):
    session = FakeSession()
    with pytest.raises(FloatingPointError, match=r"loss became NaN/inf at step 2; lower train.lr"):
        train_loop(tiny(lr=1e37), storage=str(tmp_path), tokens=("", {}), session=session)
    assert session.reports == []  # nothing reported: a NaN is never a result
    marker = tmp_path / "trials" / "t0" / "nan_loss.txt"
    assert marker.read_text() == "loss became NaN/inf at step 2; lower train.lr"
    retry = FakeSession()
    with pytest.raises(FloatingPointError, match="at step 2"):  # the marker: no second training into the NaN
        train_loop(tiny(lr=1e37), storage=str(tmp_path), tokens=("", {}), session=retry)
    assert retry.reports == []
