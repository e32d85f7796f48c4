"""Drop the optimizer state from the Ray checkpoints of trials that have ended; keep their adapters.

A training checkpoint (trainables/trial.py TrainState, state.pt) holds the LoRA adapter, the optimizer's state
(Adam: two moments per trainable parameter, twice the adapter's size), the scheduler and the RNG. Only a
trial that trains again needs the optimizer: a trial retried after a failure, or one --resume continues.
A trial that ended complete (ran to its last step, or was stopped by the scheduler: its `.ended` marker,
trainables/paths.py) never trains again: when a resume restarts it from a checkpoint (Ray's saved state
may lag behind its end) it only says its last report again (trainables/trial.py), from the adapter and
the metrics, which stay. A failed trial keeps everything: --retry-errored goes on from its checkpoint.

`CheckpointSlimmer` (a Ray Tune callback after harness.results.ResultsWriter, which writes the marker)
rewrites an ended trial's checkpoints in a background thread of the driver; each file is replaced
atomically, so a kill mid-way leaves it whole, slim or not.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray.tune import Callback

from trainables.paths import trial_ended

TRAINING_ONLY = ("optimizer", "scheduler", "scaler")  # what only further training reads


def slim_checkpoint(state_file: Path) -> int:
    """Rewrite one state.pt without the training-only state; return the bytes freed (0: already slim)."""
    import torch

    before = state_file.stat().st_size
    state = torch.load(state_file, weights_only=False, map_location="cpu")  # our own file (trainables/trial.py TrainState)
    if not isinstance(state, dict) or all(state.get(k) is None for k in TRAINING_ONLY):
        return 0
    state.update(dict.fromkeys(TRAINING_ONLY))
    tmp = state_file.with_name(state_file.name + ".slim")
    torch.save(state, tmp)
    os.replace(tmp, state_file)
    return before - state_file.stat().st_size


def slim_trial(trial_dir: Path, checkpoints_dir: Path) -> int:
    """Slim every checkpoint of a trial that ended complete; a failed or unfinished trial is left whole."""
    if trial_ended(trial_dir) != "complete":
        return 0
    freed = 0
    for state_file in sorted(Path(checkpoints_dir).glob("checkpoint_*/state.pt")):
        try:
            freed += slim_checkpoint(state_file)
        except (OSError, RuntimeError, EOFError):  # pruned by keep-best-k meanwhile, or cut: left as it is
            continue
    return freed


class CheckpointSlimmer(Callback):
    """Slims each trial's checkpoints once it has ended (see the module docstring)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._pool: Executor | None = None

    def __getstate__(self) -> dict[str, Any]:  # Tuner pickles its callbacks (for --resume): no thread in there
        return {"run_dir": self.run_dir}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["run_dir"])  # type: ignore[misc]

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        path = getattr(trial, "path", None)  # the trial's directory in storage: local unless output.dir is a URI
        if not path or "://" in str(path) or not Path(path).is_dir():
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slim-checkpoints")
        self._pool.submit(slim_trial, self.run_dir / "trials" / str(trial.trial_id), Path(path))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
