"""The LoRA / QLoRA training trial, as a recipe that reads top to bottom (`train_loop`):

    open the trial      its directory, a NaN from an earlier try, inputs the evaluations cannot score
    set up the model    base model, precision, whether packing keeps examples apart
    set up the data     the selected subset, its tokens, the curriculum's micro-batch order, report points
    set up the adapter  LoRA (on 4-bit weights for model.quantization: nf4), optimizer, scheduler
    restore             a TrainState from the last checkpoint (a retry or a resumed sweep), if any
    train               optimizer steps; at each report point evaluate held-out loss, report, checkpoint
    finish              at the last report: the end-of-trial evaluations, the adapter saved, files pushed

Ray Tune runs `train_trial` once per trial in a worker process. It receives the searched parameters (flat
dotted keys), the sweep config as a dict (`base`, masked) and the sweep's storage (a path or a URI,
trainables/storage.py); everything it writes goes under <storage>/trials/<trial_id>/. `train_loop` talks to
whatever runs it only through a `TrialSession` (report / get_checkpoint ...): Ray Tune's process, one of
resources.workers_per_trial data-parallel workers (trainables/distributed.py), or a test's in-process fake.
The eval-only trial (no training) is trainables/eval_trial.py.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from trainables.batching import Batch, Encoded, collate, pack
from trainables.data.tokenize import IGNORE, worker_tokens
from trainables.paths import atomic_write_text, had_ended
from trainables.schema import SweepConfig, trial_config
from trainables.secrets import masking_errors, redact
from trainables.storage import Storage
from trainables.training import (
    make_autocast,
    mean_loss,
    memory,
    order_batches,
    packs_apart,
    pick_device,
    report_steps,
    seed_everything,
    train_step,
)


class TrialSession(Protocol):
    """What the trial needs from whatever runs it (trainables/distributed.py Session / DDPSession; tests' fakes)."""

    trial_id: str
    world_size: int

    @property
    def is_main(self) -> bool: ...  # the process that writes the trial's files
    def step_share(self, batches: list[Batch]) -> list[Batch]: ...  # this process's micro-batches of a step
    def wrap(self, model: Any) -> Any: ...  # the module training forward passes run through
    def all_sum(self, value: float | torch.Tensor) -> float: ...
    def tagged(self, metrics: dict[str, Any]) -> dict[str, Any]: ...  # metrics with node / world size
    def get_checkpoint(self) -> dict[str, Any] | None: ...  # the last saved TrainState dict, or None
    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None: ...


@dataclass
class TrainState:
    """Everything a trial continues from: saved (as a dict, state.pt) at every report, restored on a retry
    or a resumed sweep. The counters are what the trial's metrics add up; `metrics` is the last report
    as reported (a finished trial says it again on resume)."""

    step: int = 0
    tokens_seen: int = 0
    positions: int = 0  # sequence positions run, padding included (padding_fraction)
    train_seconds: float = 0.0
    heldout_seconds: float = 0.0
    best: float = math.inf
    metrics: dict[str, Any] = field(default_factory=dict)
    adapter: dict[str, Any] | None = None  # LoRA weights
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None  # fp16 loss scaling (GPUs without bf16); None otherwise
    rng: torch.Tensor | None = None  # torch's CPU generator (LoRA dropout)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> TrainState:
        return cls(**{f.name: saved[f.name] for f in dataclasses.fields(cls) if f.name in saved})


@dataclass
class Opened:
    """The trial's place: its storage, directory (or local copy of it) and the session that runs it."""

    cfg: SweepConfig
    session: TrialSession
    store: Storage
    rel: str
    dir: Path


@dataclass
class Model:
    model: Any
    tokenizer: Any
    device: str
    autocast: Callable[[], Any]
    scaler: torch.amp.GradScaler | None
    packed: bool
    load_times: dict[str, float]


@dataclass
class Data:
    train: list  # the examples that train (the recorded subset)
    evals: list[Encoded]  # the held-out rows, encoded
    batches: list[list[int]]  # micro-batches, as indices into `train`, in training order
    encoded: Callable[[Any], Encoded]
    per_step: int  # micro-batches per optimizer step, all workers together
    total_steps: int
    reports_at: set[int]
    stats: dict[str, Any]

    def step_batches(self, step: int, m: Model) -> list[Batch]:
        """The micro-batches of optimizer step `step` (0-based), on the device."""
        out = []
        for indices in self.batches[step * self.per_step : (step + 1) * self.per_step]:
            rows = [self.encoded(self.train[i]) for i in indices]
            out.append(pack(rows, device=m.device) if m.packed else collate(rows, m.tokenizer.pad_token_id, m.device))
        return out


@dataclass
class Adapter:
    model: Any  # the peft model (eval and saving use it; training runs through `forward`)
    forward: Any
    params: list[torch.Tensor]
    optimizer: Any
    scheduler: Any
    weights: Callable[[], dict[str, Any]] | None = None  # the LoRA weights, peft-named; None: the peft model's


# ----------------------------------------------------------------------------- entry points


@masking_errors
def train_trial(params: dict[str, Any], *, base: dict[str, Any], storage: str, tokens: tuple[str, dict]) -> None:
    """Ray Tune's entry point: train_loop in this process, or on resources.workers_per_trial workers.
    `base` and `params` come masked (trainables/secrets.py); an exception leaves masked.
    `tokens`: (model name, the driver's encodings by example hash; trainables/data/tokenize.py)."""
    from trainables.distributed import run

    run(train_loop, params, base=base, storage=storage, tokens=tokens, cfg=trial_config(base, params))


@masking_errors
def train_loop(cfg: SweepConfig, *, storage: str, tokens: tuple[str, dict], session: TrialSession) -> None:
    """One trial, top to bottom (the module docstring lists the steps)."""
    t_start = time.perf_counter()
    trial = open_trial(cfg, storage, session)
    m = set_up_model(cfg)
    data = set_up_data(cfg, m, tokens, trial)
    adapter = set_up_adapter(cfg, m, data)
    adapter.forward = session.wrap(adapter.model)  # DistributedDataParallel with several workers
    adapter.forward = torch.compile(adapter.forward, dynamic=True) if cfg.train.compile else adapter.forward
    state, resumed = restore(session, m, adapter), {}
    if state.metrics:  # a retry or a resumed sweep: continue where the last report left off
        resumed = {"resumed_from_report": state.metrics["report"]}
        if had_ended(state.step, data.total_steps, trial.dir):
            session.report({**state.metrics, **resumed})
            return
        if state.optimizer is None:  # never trains on with a fresh optimizer as if it had its own
            raise RuntimeError(f"{trial.dir.name}: its checkpoint has no optimizer state (the trial had ended); "
                               "start the trial again instead of resuming it")
    static = {
        **data.stats, "trainable_params": sum(p.numel() for p in adapter.params), "seed": cfg.train.seed,
        "total_steps": data.total_steps, "packing": float(m.packed), "setup_seconds": time.perf_counter() - t_start,
        **m.load_times, **resumed,
    }
    train(trial, m, data, adapter, state, static)


# ----------------------------------------------------------------------------- set up


def open_trial(cfg: SweepConfig, storage: str, session: TrialSession) -> Opened:
    """The trial's directory; fails at once where a retry could only fail again (an earlier NaN, inputs an
    evaluation cannot score); quiet libraries, threads and seeds for this process."""
    import transformers

    from trainables.evaluate import check_inputs

    transformers.utils.logging.disable_progress_bar()  # the driver's live table is the progress display
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecations, not the user's concern
    store, rel = Storage(storage), f"trials/{session.trial_id}"
    trial = Opened(cfg, session, store, rel, store.workdir(rel))  # the directory, or its local copy for a URI
    nan_marker = trial.dir / "nan_loss.txt"
    if nan_marker.exists():  # a retry would train into the same NaN again: fail at once, same message
        raise FloatingPointError(nan_marker.read_text(encoding="utf-8"))
    check_inputs(cfg.eval, trial.dir)  # evaluations that cannot score their inputs fail before training
    res = cfg.resources
    torch.set_num_threads(max(1, int(res.cpus_per_trial / res.workers_per_trial)))
    seed_everything(cfg.train.seed)
    return trial


def set_up_model(cfg: SweepConfig) -> Model:
    """The base model on its device, its precision, and whether packed examples stay apart in it."""
    from trainables.data.prompt_template import use_prompt_template
    from trainables.models import bf16_supported, load_model

    tc, res = cfg.train, cfg.resources
    device = pick_device(tc.device)
    if device == "cuda" and 0 < res.gpus_per_trial < 1:
        # Ray shares the GPU but does not police its memory: cap this process at its share.
        torch.cuda.set_per_process_memory_fraction(res.gpus_per_trial)
    model, tokenizer, load_times = load_model(cfg.model.name, cfg.model.quantization, cfg.model.trust_remote_code,
                                              device)
    use_prompt_template(tokenizer, cfg.data.prompt_template)  # data.prompt_template replaces the chat template
    use_bf16 = tc.bf16 == "on" or (tc.bf16 == "auto" and bf16_supported(device))
    autocast = make_autocast(device, use_bf16)
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" and not use_bf16 else None  # fp16 autocast
    # Packing is only safe where the model keeps packed examples apart: check it on this model (once a worker).
    packed = tc.packing and packs_apart(model, (cfg.model.name, cfg.model.quantization, device, use_bf16), device,
                                        autocast)
    if tc.packing and not packed:
        print(f"train.packing: {cfg.model.name} lets packed examples see each other; using length-grouped batches")
    return Model(model, tokenizer, device, autocast, scaler, packed, load_times)


def set_up_data(cfg: SweepConfig, m: Model, tokens: tuple[str, dict], trial: Opened) -> Data:
    """Select the subset, take its tokens from the sweep's table, order it into micro-batches.

    The driver tokenized the base subset and the held-out set once for the whole sweep; this trial encodes
    only what it lacks (a searched selection's other examples), kept for this worker's next trials."""
    from trainables.data.curriculum import CURRICULA
    from trainables.data.pipeline import prepare, subset_stats

    tc = cfg.train
    planned_for, table = tokens
    tokens_of = worker_tokens(cfg.model.name, m.tokenizer, table if planned_for == redact(cfg.model.name) else {})
    cache: dict[int, Encoded] = {}

    def encoded(example: Any) -> Encoded:
        if id(example) not in cache:
            cache[id(example)] = tokens_of(example, tc.max_seq_len)
        return cache[id(example)]

    def n_tokens(example: Any) -> int:
        return len(encoded(example)[0])

    prep = prepare(cfg.data, cfg.selection, tc.seed, n_tokens, curriculum=cfg.curriculum, model=m.model,
                   tokenizer=m.tokenizer, max_len=tc.max_seq_len)  # the base model scores loss / IFD if asked
    # A prompt longer than max_seq_len leaves no response token to learn from.
    train = [e for e in prep.train if any(y != IGNORE for y in encoded(e)[1][1:])]
    evals = [encoded(e) for e in prep.eval if any(y != IGNORE for y in encoded(e)[1][1:])]
    if not train or not evals:
        raise ValueError(f"train.max_seq_len: {tc.max_seq_len} truncates every response away; raise it")
    if len(train) < len(prep.train):  # the recorded subset is the one that trains
        prep.stats.update(subset_stats(train, n_tokens), dropped_prompt_too_long=len(prep.train) - len(train))
    if trial.session.is_main:
        atomic_write_text(trial.dir / "selected_ids.json", json.dumps([e.id for e in train]))
    lengths = [n_tokens(e) for e in train]
    stats = {**prep.stats, "tokenized_in_trial": tokens_of.encoded}  # 0 when the sweep's table held every example
    plan = CURRICULA.get(cfg.curriculum.order)(train, cfg.curriculum, tc.epochs, tc.seed, lengths)
    batches = order_batches(plan, lengths, tc.batch_size, packed=m.packed, group=tc.group_by_length,
                            group_size=tc.group_size, curriculum=cfg.curriculum.order)
    per_step = tc.grad_accum * trial.session.world_size
    total_steps = math.ceil(len(batches) / per_step)
    return Data(train, evals, batches, encoded, per_step, total_steps, report_steps(total_steps, cfg.reports_per_trial),
                stats)


def prepare_base(cfg: SweepConfig, model: Any) -> Any:
    """The base model made ready for LoRA training, in place: nf4's k-bit preparation, gradient checkpointing.
    A trial's and a pack's (trainables/pack_actor.py) alike."""
    from peft import prepare_model_for_kbit_training

    checkpointing = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
    if cfg.model.quantization == "nf4":
        return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
                                               **checkpointing)
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(**checkpointing)
    return model


def set_up_adapter(cfg: SweepConfig, m: Model, data: Data) -> Adapter:
    """LoRA on the base model (on its 4-bit weights for nf4), the optimizer and the LR schedule."""
    from peft import LoraConfig, get_peft_model
    from transformers import get_scheduler

    tc = cfg.train
    model = get_peft_model(prepare_base(cfg, m.model), LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
    ))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = get_scheduler(tc.scheduler, optimizer, round(tc.warmup_ratio * data.total_steps), data.total_steps)
    # Compiled for the training forward only (train_loop); eval and saving use the plain module (same weights).
    return Adapter(model, model, params, optimizer, scheduler)


# ----------------------------------------------------------------------------- checkpoint


def snapshot(state: TrainState, m: Model, adapter: Adapter) -> TrainState:
    """`state` with the live weights, optimizer, schedule, loss scale and RNG: what a report checkpoints."""
    from peft.utils import get_peft_model_state_dict

    weights = adapter.weights() if adapter.weights else get_peft_model_state_dict(adapter.model)
    return dataclasses.replace(
        state, adapter=weights, optimizer=adapter.optimizer.state_dict(),
        scheduler=adapter.scheduler.state_dict(), scaler=m.scaler.state_dict() if m.scaler else None,
        rng=torch.get_rng_state())


def restore(session: TrialSession, m: Model, adapter: Adapter) -> TrainState:
    """The TrainState of the last checkpoint, loaded into the adapter, optimizer, schedule and RNG; a fresh
    TrainState when there is none."""
    from peft import set_peft_model_state_dict

    saved = session.get_checkpoint()
    if not saved:
        return TrainState()
    state = TrainState.from_dict(saved)
    set_peft_model_state_dict(adapter.model, state.adapter)
    if state.optimizer is not None:  # dropped once the trial ended (harness/checkpoints.py)
        adapter.optimizer.load_state_dict(state.optimizer)
        adapter.scheduler.load_state_dict(state.scheduler)
    if m.scaler and state.scaler:
        m.scaler.load_state_dict(state.scaler)
    torch.set_rng_state(state.rng)
    return state


# ----------------------------------------------------------------------------- train, report, finish


def train(trial: Opened, m: Model, data: Data, adapter: Adapter, state: TrainState, static: dict[str, Any]) -> None:
    """Accumulate, step, and at each report point evaluate + report + checkpoint. Nothing here waits for the
    device except a report: the window's losses add up on the device."""
    tc, session = trial.cfg.train, trial.session
    adapter.model.train()
    window_loss, window_tokens, t_window = torch.zeros((), device=m.device), 0, time.perf_counter()
    while state.step < data.total_steps:
        step_batches = data.step_batches(state.step, m)
        n_labels = sum(b.n_labels for b in step_batches)
        window_loss += train_step(adapter.forward, session.step_share(step_batches), m.autocast, adapter.optimizer,
                                  adapter.scheduler, adapter.params, tc.max_grad_norm, n_labels, m.scaler)
        window_tokens += n_labels
        state.tokens_seen += sum(b.n_tokens for b in step_batches)
        state.positions += sum(b.n_positions for b in step_batches)
        state.step += 1
        if state.step in data.reports_at:
            train_loss = session.all_sum(window_loss) / max(window_tokens, 1)  # the one host sync: reports only
            state.train_seconds += time.perf_counter() - t_window
            report(trial, m, data, adapter, state, {**static, "train_loss": train_loss})
            window_loss, window_tokens, t_window = torch.zeros((), device=m.device), 0, time.perf_counter()


def report(trial: Opened, m: Model, data: Data, adapter: Adapter, state: TrainState, known: dict[str, Any]) -> None:
    """Held-out loss (and eval.perplexity_every_report's sets), the report's metrics, NaN refused; at the last
    step `finish`; then report with the checkpoint."""
    cfg, session, tc = trial.cfg, trial.session, trial.cfg.train
    t_eval, eval_loss_sets = time.perf_counter(), {}
    eval_loss = mean_loss(adapter.model, data.evals, tc.batch_size * 2, m.tokenizer.pad_token_id, m.device,
                          m.autocast, m.packed)
    if cfg.eval.perplexity_every_report:  # named test sets too, so early stopping can use ppl_<stem>
        eval_loss_sets = _report_perplexity(cfg, adapter.model, m.tokenizer, trial.dir, data.train)
    state.heldout_seconds += time.perf_counter() - t_eval
    if not math.isfinite(eval_loss) or not math.isfinite(known["train_loss"]):
        message = f"loss became NaN/inf at step {state.step}; lower train.lr"
        atomic_write_text(trial.dir / "nan_loss.txt", message)
        raise FloatingPointError(message)
    state.best = min(state.best, eval_loss)
    metrics = {
        **known, **memory(m.device), "report": sorted(data.reports_at).index(state.step) + 1,
        "step": state.step, "epoch": state.step / data.total_steps * tc.epochs, "tokens_seen": state.tokens_seen,
        "eval_loss": eval_loss, "best_eval_loss": state.best, "eval_perplexity": math.exp(min(eval_loss, 50)),
        "lr": adapter.scheduler.get_last_lr()[0], "train_seconds": state.train_seconds,
        "tokens_per_second": state.tokens_seen / max(state.train_seconds, 1e-9),
        "heldout_seconds": state.heldout_seconds, "padding_fraction": 1 - state.tokens_seen / max(state.positions, 1),
        **eval_loss_sets,
    }
    if state.step == data.total_steps and session.is_main:  # the expensive evaluations join the last report
        metrics.update(finish(trial, m, data, adapter, metrics))
    state.metrics = session.tagged(metrics)  # as reported
    session.report(metrics, snapshot(state, m, adapter).to_dict())


def finish(trial: Opened, m: Model, data: Data, adapter: Adapter, metrics: dict[str, Any]) -> dict[str, Any]:
    """End of trial: the configured evaluations (perplexity on test sets, MCQ, judge...), the objective
    required among the metrics, the adapter saved, the trial's files pushed to the storage."""
    from trainables.evaluate import require_objective, run_all

    cfg = trial.cfg
    adapter.model.eval()
    with torch.no_grad():
        final = run_all(cfg.eval, adapter.model, m.tokenizer, trial.dir, data.train)
    require_objective(cfg.search.metric, {**metrics, **final})
    if cfg.output.save_adapter:
        adapter.model.save_pretrained(trial.dir / "adapter")
    trial.store.push(trial.rel)
    return final


def _report_perplexity(cfg: SweepConfig, model: Any, tokenizer: Any, trial_dir: Path, pool: list) -> dict[str, float]:
    """loss_<stem> / ppl_<stem> of eval.perplexity's files at a training report."""
    from trainables.evaluate import EvalContext, perplexity

    model.eval()
    with torch.no_grad():
        out = perplexity.run(EvalContext(cfg.eval, model, tokenizer, trial_dir, pool))
    model.train()
    return out
