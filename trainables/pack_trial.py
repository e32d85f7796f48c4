"""A Ray Tune trial served by a pack actor (resources.pack > 1; trainables/pack_actor.py).

The trial stays a Tune trial - its own reports, checkpoints, scheduler decisions, retries and --resume -
but reserves no CPU (only memory for its process): the training runs in a pack actor that holds the pack's resources and
one copy of the base model for up to resources.pack trials with the same base (pack_actor.base_key).
The trial joins a pack with its config and the TrainState of its last checkpoint, then hands each report
the actor makes for it to Tune with its checkpoint. Whatever ends the trial - its last report, the
scheduler stopping it (Tune's report raises SystemExit), an error - it leaves the pack, so the next
pending trial can take its place.
"""

from __future__ import annotations

import os
import time
from typing import Any

from trainables.secrets import masking_errors

JOIN_RETRY_S = 1.0


def pack_name(sweep: str, key: str, index: int) -> str:
    return f"pack-{sweep}-{key}-{index}"


@masking_errors
def pack_trial(params: dict[str, Any], *, base: dict[str, Any], storage: str, tokens: tuple[str, dict]) -> None:
    """Ray Tune's entry point with resources.pack > 1 (harness/tuner.py make_trainable)."""
    import ray
    from ray import tune

    from trainables.distributed import REUSE_WAIT_S, Session
    from trainables.pack_actor import base_key
    from trainables.schema import trial_config
    from trainables.storage import Storage
    from trainables.training import memory
    from trainables.trial import had_ended

    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(REUSE_WAIT_S))  # as distributed.trial_process
    cfg = trial_config(base, params)
    session = Session(tune.get_context().get_trial_id())
    saved = session.get_checkpoint()
    if saved and saved.get("metrics"):
        last = saved["metrics"]
        trial_dir = Storage(storage).workdir(f"trials/{session.trial_id}")
        if had_ended(last.get("step", 0), last.get("total_steps", float("inf")), trial_dir):
            session.report({**last, "resumed_from_report": last["report"]})
            return
    actor = _join(cfg, base_key(cfg), session.trial_id, (params, base, storage, tokens, saved))
    try:
        while True:
            kind, value, state = ray.get(actor.next_report.remote(session.trial_id))
            if kind == "error":
                raise value
            # this process's own memory too: a pack's cost is its actor and every member's relay process
            session.report({**value, "relay_peak_rss_mb": memory("cpu")["peak_rss_mb"]}, state)
            if value["step"] >= value["total_steps"]:
                return
    finally:
        ray.get(actor.leave.remote(session.trial_id))


def _join(cfg: Any, key: str, trial_id: str, args: tuple) -> Any:
    """Join the first pack of this base with a free slot, making it when there is none: a named, detached
    Ray actor with the pack's resources, outside the trial's placement group."""
    import ray

    from trainables.pack_actor import PackActor

    res = cfg.resources
    index = 0
    while True:
        name = pack_name(cfg.name, key, index)
        actor = ray.remote(PackActor).options(
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
