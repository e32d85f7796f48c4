"""A Ray Tune trial served by a pack actor (resources.pack > 1; trainables/pack_actor.py).

The trial stays a Tune trial - its own reports, checkpoints, scheduler decisions, retries and --resume -
but reserves no CPU (only memory for its process): the training runs in a pack actor that holds the pack's
resources and one copy of the base model for up to resources.pack trials with the same base (base_key).
The trial joins a pack with its config and its last checkpoint, then hands each report the actor makes for
it to Tune with its checkpoint. Whatever ends the trial - its last report, the scheduler stopping it
(Tune's report raises SystemExit), an error - it leaves the pack, so the next pending trial can take its
place. This process never imports torch (~180 MB a process; k of them per pack) nor holds a TrainState:
the actor writes each one as state.pt, into a directory this process reports as the checkpoint when both
run on one machine, else as bytes this process writes straight from Ray's object store; the report goes
beside it (report.json), which is what a resume reads back.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainables.schema import SweepConfig
from trainables.secrets import masking_errors

if TYPE_CHECKING:
    from typing_extensions import Buffer  # bytes, or a numpy array of them

JOIN_RETRY_S = 1.0
STATE, REPORT = "state.pt", "report.json"  # a packed trial's checkpoint: the TrainState, and its report


def pack_name(sweep: str, key: str, index: int) -> str:
    return f"pack-{sweep}-{key}-{index}"


def base_key(cfg: SweepConfig) -> str:
    """What fixes the base computation: trials with the same key may share a pack, others never."""
    tc = cfg.train
    fixed = {"model": cfg.model.model_dump(), "bf16": tc.bf16, "device": tc.device, "max_seq_len": tc.max_seq_len,
             "packing": tc.packing, "checkpointing": tc.gradient_checkpointing, "target": cfg.lora.target_modules,
             "template": cfg.data.prompt_template, "resources": cfg.resources.model_dump()}
    return hashlib.sha1(json.dumps(fixed, sort_keys=True, default=str).encode()).hexdigest()[:10]


@masking_errors
def pack_trial(params: dict[str, Any], *, base: dict[str, Any], storage: str, tokens: tuple[str, dict]) -> None:
    """Ray Tune's entry point with resources.pack > 1 (harness/tuner.py make_trainable)."""
    import ray
    from ray import tune

    from trainables.paths import REUSE_WAIT_S, had_ended
    from trainables.schema import trial_config
    from trainables.storage import Storage

    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(REUSE_WAIT_S))  # as distributed.trial_process
    cfg = trial_config(base, params)
    trial_id = tune.get_context().get_trial_id()
    state, last = _last_checkpoint()
    if last:
        trial_dir = Storage(storage).workdir(f"trials/{trial_id}")
        if had_ended(last.get("step", 0), last.get("total_steps", float("inf")), trial_dir):
            tune.report({**last, "resumed_from_report": last["report"]})
            return
    node = ray.get_runtime_context().get_node_id()
    actor = _join(cfg, base_key(cfg), trial_id, (params, base, storage, tokens, state, node))
    try:
        while True:
            kind, value, state = ray.get(actor.next_report.remote(trial_id))
            if kind == "error":
                raise value
            # this process's own memory too: a pack's cost is its actor and every member's relay process
            _report({**value, "relay_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}, state)
            if value["step"] >= value["total_steps"]:
                return
    finally:
        ray.get(actor.leave.remote(trial_id))


def _last_checkpoint() -> tuple[bytes | None, dict[str, Any]]:
    """The trial's last checkpoint: its TrainState's bytes (the actor loads them) and its report."""
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, {}
    with checkpoint.as_directory() as d:
        report = Path(d, REPORT)
        return Path(d, STATE).read_bytes(), json.loads(report.read_text()) if report.exists() else {}


def _report(metrics: dict[str, Any], state: str | Buffer | None) -> None:
    """The report to Tune, with the TrainState the actor serialised as its checkpoint (Session.report's
    layout, state.pt, so that a checkpoint is read the same way packed or not). `state` (MemberSession.report):
    a directory with state.pt that the actor wrote on this machine, or state.pt's bytes as a read-only view
    of Ray's object store, written without a copy."""
    from ray import tune

    if state is None:
        tune.report(metrics)
        return
    folder = state if isinstance(state, str) else tempfile.mkdtemp()
    try:
        if not isinstance(state, str):
            Path(folder, STATE).write_bytes(state)
        Path(folder, REPORT).write_text(json.dumps(metrics, default=str))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _join(cfg: Any, key: str, trial_id: str, args: tuple) -> Any:
    """Join the first pack of this base with a free slot, making it when there is none: a named, detached
    Ray actor with the pack's resources, outside the trial's placement group."""
    import ray

    res = cfg.resources
    index = 0
    while True:
        name = pack_name(cfg.name, key, index)
        actor = ray.remote(PackHost).options(
            name=name, get_if_exists=True, lifetime="detached", max_concurrency=2 * res.pack + 4,
            num_cpus=res.cpus_per_trial, num_gpus=res.gpus_per_trial, scheduling_strategy="DEFAULT",
        ).remote(f"{key}-{index}", res.pack)
        try:
            answer = ray.get(actor.join.remote(trial_id, *args))
        except ray.exceptions.RayActorError:  # it exited (idle) as we came: make it again
            time.sleep(JOIN_RETRY_S)
            continue
        if answer == "joined":
            return actor
        index += 1


class PackHost:
    """The pack actor's Ray class as its trials see it: the PackActor itself (torch, the model) is made in
    the actor's own process, so that a trial's process never imports it."""

    def __init__(self, pack_id: str, capacity: int):
        from trainables.pack_actor import PackActor

        self.pack = PackActor(pack_id, capacity)

    def join(self, *args: Any) -> str:
        return self.pack.join(*args)

    def next_report(self, trial_id: str) -> tuple[str, Any, Any]:
        return self.pack.next_report(trial_id)

    def leave(self, trial_id: str) -> None:
        self.pack.leave(trial_id)
