"""The pack actor: up to resources.pack Ray Tune trials training on one copy of the base model.

Each member is a Tune trial (trainables/pack_trial.py) that joined with its config and its restored
TrainState; the actor keeps what the trial's recipe (trainables/trial.py) sets up per trial - its directory,
data plan, LoRA adapter (a member of trainables.pack.PackedLora), optimizer, schedule, counters - and
runs every member's next optimizer step together (trainables.pack.packed_train_step: one base forward and
backward per round). At a member's own report points it evaluates and reports through a `MemberSession`
whose report() queues the metrics and TrainState for the trial to hand to Tune. A member with an
unconsumed report does not step on to its next report point (at most one report ahead of its trial), so a
trial that Tune stops has cost the pack at most one report interval. A member that fails (a NaN loss) is
removed and its trial raises the error; the others go on.
"""

from __future__ import annotations

import io
import queue
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainables.distributed import Session, return_freed_memory, where
from trainables.pack_trial import STATE
from trainables.schema import SweepConfig, trial_config

IDLE_EXIT_S = 20.0  # an empty pack waits this long for a next trial before its process exits (frees its resources)


class MemberSession(Session):
    """A member trial's session inside the pack: the trial's own id; its checkpoint is the TrainState it
    joined with; its reports go to the member's queue (the trial's process reports them to Tune).
    `handoff`: where its checkpoints are written when the trial's process runs on this machine too (a
    directory's name prefix, in the temporary directory), else None."""

    def __init__(self, trial_id: str, saved: dict[str, Any] | None, reports: queue.Queue, handoff: str | None):
        super().__init__(trial_id)
        self.saved, self.reports, self.handoff = saved, reports, handoff
        self.pack: dict[str, Any] = {}  # pack_id / packed_with, added to every report

    def get_checkpoint(self) -> dict[str, Any] | None:
        return self.saved

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        """Queued for the trial's process (which has no torch), the TrainState written as state.pt: in a
        directory named by the handoff prefix, which the trial reports as its checkpoint and deletes, or
        else as state.pt's bytes in a numpy array, which Ray hands over as a view of its object store
        (bytes would be copied into the trial's heap). Either way the trial's process never holds the state itself: a relay that did
        peaked at 570 MB for r 32, ~200 MB of it Ray Tune's own imports."""
        if state is not None and self.handoff is not None:
            folder = Path(tempfile.mkdtemp(prefix=self.handoff))
            torch.save(state, folder / STATE)
            state = str(folder)
        elif state is not None:
            buffer = io.BytesIO()
            torch.save(state, buffer)
            state = np.frombuffer(buffer.getbuffer(), dtype=np.uint8)
        self.reports.put(("report", {**self.tagged(metrics), **self.pack}, state))


class MemberView:
    """The packed model as one member's model: every row of a call goes through that member's adapter.
    What trial.report / finish use where an unpacked trial uses its peft model (held-out loss, save)."""

    def __init__(self, packed: Any, model: Any, member_id: str):
        self.packed, self.model, self.member_id = packed, model, member_id

    def __call__(self, **inputs: Any) -> Any:
        with self.packed.routed([(self.member_id, int(inputs["input_ids"].shape[0]))]):
            return self.model(**inputs)

    def get_base_model(self) -> Any:
        """The transformers model (as peft's: batching asks it whether it takes logits_to_keep)."""
        return self.model

    def train(self, mode: bool = True) -> MemberView:
        self.model.train(mode)
        return self

    def eval(self) -> MemberView:
        return self.train(False)

    def save_pretrained(self, path: Any) -> None:
        self.packed.save_peft(self.member_id, path)


@dataclass
class Member:
    trial: Any  # trainables.trial.Opened
    data: Any  # trainables.trial.Data
    adapter: Any  # trainables.trial.Adapter (model: a MemberView)
    state: Any  # trainables.trial.TrainState
    static: dict[str, Any]
    reports: queue.Queue
    window_loss: torch.Tensor
    window_tokens: int = 0
    t_window: float = field(default_factory=time.perf_counter)
    with_: set[str] = field(default_factory=set)  # other trials seen in the pack while this one ran

    def blocked(self) -> bool:
        """At a report point with the last report not yet taken by the trial: wait (one report ahead at most)."""
        return self.reports.qsize() > 0 and self.state.step + 1 in self.data.reports_at

    @property
    def finished(self) -> bool:
        return self.state.step >= self.data.total_steps


class PackActor:
    """A Ray actor (threaded): join / next_report / leave come from the member trials while the training
    thread runs the pack's rounds; `lock` keeps a round and a member's set-up apart."""

    def __init__(self, pack_id: str, capacity: int):
        self.pack_id, self.capacity = pack_id, capacity
        self.lock, self.wake = threading.Lock(), threading.Event()  # lock: rounds and set-ups
        self.slots = threading.Lock()  # reserved / gone / empty_since: joins and leaves never wait for a round
        self.gone: set[str] = set()  # left, still to be dropped by the training thread
        self.m: Any = None  # trainables.trial.Model, loaded by the first member
        self.packed: Any = None
        self.members_per_pass: int | None = None
        self.members: dict[str, Member] = {}
        self.queues: dict[str, queue.Queue] = {}
        self.reserved: set[str] = set()
        self.empty_since = time.monotonic()
        self.node_id = where()["node_id"]  # a trial on this node gets its checkpoints as directories
        return_freed_memory()
        threading.Thread(target=self._run, daemon=True).start()

    # ------------------------------------------------------------------ called by the member trials

    def join(self, trial_id: str, params: dict[str, Any], base: dict[str, Any], storage: str,
             tokens: tuple[str, dict], saved: bytes | None, node_id: str | None = None) -> str:
        """"joined", or "full" (the trial tries the next pack). The member is set up here (the trial's recipe
        steps), its reports then come from next_report. `node_id`: the trial's Ray node (on this one its
        checkpoints are handed over as directories, MemberSession.report)."""
        with self.slots:
            if len(self.reserved) >= self.capacity or self.empty_since is None:
                return "full"
            self.reserved.add(trial_id)
            self.gone.discard(trial_id)  # a retried trial joining the pack it left
            self.queues[trial_id] = queue.Queue()
        try:
            with self.lock:
                self._drop_gone()  # a retry of a trial that left: its old member first
                state = torch.load(io.BytesIO(saved), weights_only=False) if saved else None  # its state.pt
                self._set_up(trial_id, trial_config(base, params), storage, tokens, state,
                             self._handoff(trial_id) if node_id == self.node_id else None)
        except BaseException as e:  # noqa: BLE001 - the trial raises it (next_report)
            with self.lock:
                self._drop(trial_id)
            self.queues[trial_id].put(("error", e, None))
        self.wake.set()
        return "joined"

    def next_report(self, trial_id: str) -> tuple[str, Any, Any]:
        """("report", metrics, TrainState dict) | ("error", exception, None), blocking until there is one."""
        return self.queues[trial_id].get()

    def leave(self, trial_id: str) -> None:
        """The trial ended (finished, stopped by the scheduler, failed): its slot is free for the next at once;
        the training thread drops the member before its next round (a trial never waits for a round)."""
        with self.slots:
            self.gone.add(trial_id)
            self.reserved.discard(trial_id)
            if not self.reserved:
                self.empty_since = time.monotonic()
        # its checkpoints not taken, now: when the sweep ends with this trial, the pack is gone before a next round
        _delete_handoffs(self._handoff(trial_id))
        self.wake.set()

    # ------------------------------------------------------------------ set up (the trial's recipe)

    def _handoff(self, trial_id: str) -> str:
        """The name prefix of the directories where this member's checkpoints wait for its trial (on this
        machine): the trial deletes each one it has reported; leave and _drop delete the ones it never took."""
        return f"harness-pack-{self.pack_id}-{trial_id}-"

    def _set_up(self, trial_id: str, cfg: SweepConfig, storage: str, tokens: tuple[str, dict],
                saved: dict[str, Any] | None, handoff: str | None) -> None:
        from trainables import trial as recipe

        t0 = time.perf_counter()
        session = MemberSession(trial_id, saved, self.queues[trial_id], handoff)
        opened = recipe.open_trial(cfg, storage, session)
        if self.m is None:
            from trainables.pack import PackedLora

            self.m = recipe.set_up_model(cfg)
            # the same for all members: resources are in base_key
            self.members_per_pass = members_per_pass(cfg.resources.pack_members_per_pass, self.m.device)
            self.packed = PackedLora(recipe.prepare_base(cfg, self.m.model), cfg.lora.target_modules)
        with self.packed.base_only():  # a selection that scores examples runs the base model
            data = recipe.set_up_data(cfg, self.m, tokens, opened)
        adapter = self._set_up_adapter(trial_id, cfg, data)
        state = self._restore(trial_id, saved, adapter)
        if state.metrics and state.optimizer is None and state.step < data.total_steps:
            raise RuntimeError(f"{trial_id}: its checkpoint has no optimizer state (the trial had ended); "
                               "start the trial again instead of resuming it")
        resumed = {"resumed_from_report": state.metrics["report"]} if state.metrics else {}
        static = {**data.stats, "trainable_params": sum(p.numel() for p in adapter.params), "seed": cfg.train.seed,
                  "total_steps": data.total_steps, "packing": float(self.m.packed),
                  "setup_seconds": time.perf_counter() - t0, **self.m.load_times, **resumed}
        self.members[trial_id] = Member(opened, data, adapter, state, static, self.queues[trial_id],
                                        torch.zeros((), device=self.m.device))

    def _drop(self, trial_id: str) -> None:
        """The member out of the pack (its LoRA weights, optimizer and untaken checkpoints freed). Under `lock`."""
        self.members.pop(trial_id, None)
        _delete_handoffs(self._handoff(trial_id))
        if self.packed is not None and trial_id in self.packed.members():
            self.packed.remove(trial_id)

    def _drop_gone(self) -> None:
        with self.slots:
            gone, self.gone = self.gone, set()
        for trial_id in gone:
            self._drop(trial_id)

    def _set_up_adapter(self, trial_id: str, cfg: SweepConfig, data: Any) -> Any:
        from transformers import get_scheduler

        from trainables.pack import MemberSpec
        from trainables.trial import Adapter

        tc, lc = cfg.train, cfg.lora
        self.packed.add(MemberSpec(member_id=trial_id, r=lc.r, alpha=lc.alpha, dropout=lc.dropout,
                                   use_rslora=bool(getattr(lc, "use_rslora", False)),
                                   target_modules=_targets(lc.target_modules), seed=tc.seed))
        params = self.packed.parameters_of(trial_id)
        optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
        scheduler = get_scheduler(tc.scheduler, optimizer, round(tc.warmup_ratio * data.total_steps), data.total_steps)
        view = MemberView(self.packed, self.m.model, trial_id)
        return Adapter(view, view, params, optimizer, scheduler, weights=lambda: self.packed.state_of(trial_id))

    def _restore(self, trial_id: str, saved: dict[str, Any] | None, adapter: Any) -> Any:
        from trainables.trial import TrainState

        if not saved:
            return TrainState()
        state = TrainState.from_dict(saved)
        self.packed.load_state(trial_id, state.adapter)
        if state.optimizer is not None:
            adapter.optimizer.load_state_dict(state.optimizer)
            adapter.scheduler.load_state_dict(state.scheduler)
        return state

    # ------------------------------------------------------------------ the rounds

    def _run(self) -> None:
        while True:
            self.wake.wait(timeout=1.0)
            self.wake.clear()
            try:
                while self._round():
                    pass
            except BaseException as e:  # noqa: BLE001 - a round that fails fails every member in it, not silently
                with self.lock:
                    for tid, mb in list(self.members.items()):
                        self._drop(tid)
                        mb.reports.put(("error", e, None))
            with self.slots:
                idle = not self.reserved and time.monotonic() - self.empty_since > IDLE_EXIT_S
                if idle:
                    self.empty_since = None  # joins now answer "full": a new pack is made
            if idle:
                import ray

                ray.kill(ray.get_runtime_context().current_actor)

    def _round(self) -> bool:
        """One optimizer step for every member that may step; False when none may."""
        from trainables.pack import packed_train_step

        with self.lock:
            self._drop_gone()
            ready = {tid: mb for tid, mb in self.members.items() if not mb.finished and not mb.blocked()}
            if not ready:
                return False
            for tid, mb in self.members.items():
                mb.with_ |= set(self.members) - {tid}
            steps = {tid: mb.data.step_batches(mb.state.step, self.m) for tid, mb in ready.items()}
            n_labels = {tid: sum(b.n_labels for b in batches) for tid, batches in steps.items()}
            losses = packed_train_step(self.packed, self.m.model, steps, self.m.autocast,
                                       {t: mb.adapter.optimizer for t, mb in ready.items()},
                                       {t: mb.adapter.scheduler for t, mb in ready.items()},
                                       {t: mb.trial.cfg.train.max_grad_norm for t, mb in ready.items()}, n_labels,
                                       self.members_per_pass)
            for tid, mb in ready.items():
                self._stepped(tid, mb, steps[tid], losses[tid], n_labels[tid])
        return True

    def _stepped(self, tid: str, mb: Member, batches: list, loss: torch.Tensor, n_labels: int) -> None:
        """Count the member's step; at its report point evaluate and report (trial.report), or fail it alone."""
        from trainables import trial as recipe

        mb.window_loss += loss
        mb.window_tokens += n_labels
        mb.state.tokens_seen += sum(b.n_tokens for b in batches)
        mb.state.positions += sum(b.n_positions for b in batches)
        mb.state.step += 1
        if mb.state.step not in mb.data.reports_at:
            return
        mb.state.train_seconds += time.perf_counter() - mb.t_window
        mb.trial.session.pack = {"pack_id": self.pack_id, "packed_with": ";".join(sorted(mb.with_))}
        try:
            recipe.report(mb.trial, self.m, mb.data, mb.adapter, mb.state,
                          {**mb.static, "train_loss": float(mb.window_loss) / max(mb.window_tokens, 1)})
        except Exception as e:  # noqa: BLE001 - this member fails alone (a NaN loss); the pack goes on
            self._drop(tid)
            mb.reports.put(("error", e, None))
            return
        mb.window_loss, mb.window_tokens, mb.t_window = torch.zeros((), device=self.m.device), 0, time.perf_counter()


def _targets(target_modules: list[str] | str) -> tuple[str, ...]:
    """lora.target_modules as a MemberSpec takes them ("all-linear" is one name)."""
    return (target_modules,) if isinstance(target_modules, str) else tuple(target_modules)


def members_per_pass(configured: int | None, device: str) -> int | None:
    """resources.pack_members_per_pass, or its default: every member in one pass on a GPU (bigger batches
    fill it), one member a pass on the CPU, where the arithmetic is the same either way and only the
    memory differs (docs/performance.md: 8 trials in 2 packs of 4, the packs' memory 0.48x and the
    sweep's time 0.86x of one pass per round)."""
    if configured is not None:
        return configured
    return 1 if device == "cpu" else None


def _delete_handoffs(prefix: str) -> None:
    """A member's checkpoint directories its trial never took (MemberSession.report's handoff)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        shutil.rmtree(folder, ignore_errors=True)
