"""harness/checkpoints.py: an ended trial's checkpoints lose the optimizer state and keep the adapter; a
failed or unfinished trial's stay whole (a retry or --resume trains on from them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from harness.checkpoints import slim_trial
from trainables.paths import ENDED


def _trial(tmp_path: Path, ended: str | None) -> tuple[Path, Path]:
    trial_dir, tune_dir = tmp_path / "trials" / "t1", tmp_path / "tune" / "train_trial_t1"
    trial_dir.mkdir(parents=True)
    if ended is not None:
        (trial_dir / ENDED).write_text(ended)
    adapter = {"lora_A": torch.randn(64, 576)}
    optimizer = {"state": {0: {"exp_avg": torch.randn(64, 576), "exp_avg_sq": torch.randn(64, 576)}}}
    for i in range(2):
        d = tune_dir / f"checkpoint_{i:06d}"
        d.mkdir(parents=True)
        torch.save({"adapter": adapter, "optimizer": optimizer, "scheduler": {"last_epoch": 3}, "scaler": None,
                    "step": 12 * (i + 1), "metrics": {"report": i + 1}}, d / "state.pt")
    return trial_dir, tune_dir


def test_an_ended_trial_keeps_its_adapter_not_its_optimizer(tmp_path: Path):
    trial_dir, tune_dir = _trial(tmp_path, "complete")
    before = sum(f.stat().st_size for f in tune_dir.glob("*/state.pt"))
    freed = slim_trial(trial_dir, tune_dir)
    after = sum(f.stat().st_size for f in tune_dir.glob("*/state.pt"))
    assert freed == before - after and after < before / 2.5  # Adam's two moments were twice the adapter
    for f in tune_dir.glob("*/state.pt"):
        state = torch.load(f, weights_only=False)
        assert state["optimizer"] is None and state["scheduler"] is None
        assert state["adapter"]["lora_A"].shape == (64, 576) and state["metrics"]["report"] in (1, 2)
    assert slim_trial(trial_dir, tune_dir) == 0  # twice is harmless
    assert not list(tune_dir.glob("*/*.slim"))


@pytest.mark.parametrize("ended", ["error", None])
def test_a_failed_or_unfinished_trial_keeps_everything(tmp_path: Path, ended: str | None):
    trial_dir, tune_dir = _trial(tmp_path, ended)
    assert slim_trial(trial_dir, tune_dir) == 0
    for f in tune_dir.glob("*/state.pt"):
        assert torch.load(f, weights_only=False)["optimizer"] is not None
