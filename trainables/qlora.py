"""The QLoRA trial. Reads top to bottom: load, set up, train, evaluate, save.

Ray Tune runs `train_trial` once per trial in its own worker process. It receives the
searched parameters (flat dotted keys), the full sweep config as a dict (`base`) and the
sweep's storage (a path or a URI, harness/storage.py); everything it writes goes under
<storage>/trials/<trial_id>/. `train_loop` talks to whatever runs it through a session
(trainables/distributed.py): this process, or one of resources.workers_per_trial data-parallel workers.

Arithmetic (defaults of sweeps/lora_rank.yaml): 100 examples / (batch 4 x accum 1)
= 25 optimizer steps per epoch; x ~107 tokens per example = ~10.7k real tokens per epoch.

Speed (docs/performance.md; each a train.* switch): a micro-batch is packed into one row without
padding (trainables/batching.py), or length-grouped when packing is off; logits only at response
positions; the loop never waits for the device except when it reports; optional torch.compile and
gradient checkpointing. The inner step is `train_step`, which bench/bench_train.py times directly.
"""

from __future__ import annotations

import json
import math
import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from trainables.batching import (
    CURRICULUM_GROUP_SIZE,
    GROUP_SIZE,
    Batch,
    Encoded,
    collate,
    group_by_length,
    micro_batches,
    pack,
    packing_isolates,
    token_loss_sum,
)
from trainables.data.tokenize import IGNORE, worker_tokens
from trainables.paths import atomic_write_text, trial_ended
from trainables.secrets import expand, masking_errors, redact, register

# ----------------------------------------------------------------------------- helpers


def pick_device(choice: str) -> str:
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return choice


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def make_autocast(device: str, use_bf16: bool) -> Callable[[], Any]:
    """bf16 autocast where it pays (CUDA; CPUs with AVX-512 BF16 / AMX); fp16 autocast on older GPUs."""
    dtype = torch.bfloat16 if use_bf16 else torch.float16
    enabled = use_bf16 or device == "cuda"
    return lambda: torch.autocast(device_type=device, dtype=dtype, enabled=enabled)


_packing_checked: dict[tuple, bool] = {}


def packs_apart(model: Any, key: tuple, device: str, autocast: Callable[[], Any]) -> bool:
    """packing_isolates, once per `key` (model, quantization, device, precision) in this process: a
    reused worker's later trials skip the check (~0.4 s each on this CPU, measured)."""
    if key not in _packing_checked:
        _packing_checked[key] = packing_isolates(model, device, autocast)
    return _packing_checked[key]


def order_batches(plan: list[list[int]], lengths: list[int], batch_size: int, *, packed: bool, group: bool,
                  group_size: int | None, curriculum: str) -> list[list[int]]:
    """Which examples share each micro-batch. Packed micro-batches have no padding, so they keep the
    curriculum's order exactly; padded ones are length-grouped in windows (small ones under a curriculum)."""
    if packed or not group:
        return micro_batches(plan, batch_size)
    size = group_size or (GROUP_SIZE if curriculum == "none" else CURRICULUM_GROUP_SIZE)
    return group_by_length(plan, lengths, batch_size, size)


def train_step(model: Any, batches: list[Batch], autocast: Callable[[], Any], optimizer: Any, scheduler: Any,
               params: list[torch.Tensor], max_grad_norm: float, n_labels: int | None = None,
               scaler: torch.amp.GradScaler | None = None) -> torch.Tensor:
    """One optimizer step: gradients of the mean response-token loss over the step's micro-batches
    (every token weighs the same, however the tokens fall into micro-batches), clip, step.
    `n_labels`: the response tokens of the whole step when `batches` is one data-parallel worker's
    share of it (default: these batches'). Returns the step's summed token loss as a device tensor:
    reading it is a host sync, so the loop adds it up on the device and reads it only when it reports.
    `scaler`: loss scaling for fp16 autocast (GPUs without bf16, e.g. a T4), so small gradients do not
    underflow; a step with inf/NaN gradients is skipped and the scale lowered."""
    n = max(sum(b.n_labels for b in batches) if n_labels is None else n_labels, 1)  # counted on the host
    total = torch.zeros((), device=batches[0].targets.device)
    for b in batches:
        loss = token_loss_sum(model, b, autocast)
        (scaler.scale(loss / n) if scaler else loss / n).backward()
        total += loss.detach()
    if scaler:
        scaler.unscale_(optimizer)  # clip the true gradients
    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total


@torch.no_grad()
def mean_loss(model: Any, data: list[Encoded], batch_size: int, pad_id: int, device: str, autocast: Any,
              packed: bool = False) -> float:
    """Mean token loss over a data set (the held-out eval_loss)."""
    model.eval()
    total, count = torch.zeros((), device=device), 0
    ordered = sorted(data, key=lambda e: len(e[0]))  # similar lengths together: less padding
    for i in range(0, len(ordered), batch_size):
        chunk = ordered[i : i + batch_size]
        batch = pack(chunk, device=device) if packed else collate(chunk, pad_id, device)
        total += token_loss_sum(model, batch, autocast)
        count += batch.n_labels
    model.train()
    return float(total) / max(count, 1)


def report_steps(total_steps: int, n_reports: int) -> set[int]:
    """Evenly spaced optimizer steps (1-based) at which to evaluate and report; the last is the end."""
    n = min(n_reports, total_steps)
    return {max(1, round(total_steps * k / n)) for k in range(1, n + 1)}


# ----------------------------------------------------------------------------- the trial


@masking_errors
def train_trial(params: dict[str, Any], *, base: dict[str, Any], storage: str, tokens: tuple[str, dict]) -> None:
    """Ray Tune's entry point: train_loop in this process, or on resources.workers_per_trial workers.
    `base` and `params` come masked (trainables/secrets.py); an exception leaves masked.
    `tokens`: (model name, the driver's encodings by example hash; trainables/data/tokenize.py)."""
    from trainables.distributed import run

    cfg = trial_config(base, params)
    run(train_loop, params, base=base, storage=storage, tokens=tokens, resources=cfg.resources)


def trial_config(base: dict[str, Any], params: dict[str, Any]) -> Any:
    """The trial's SweepConfig: the searched values in the sweep's config, secret values resolved from
    this process's environment (the driver hands Ray the config masked), the judge's key variable
    treated as secret here too."""
    from harness.config import SweepConfig
    from harness.space import resolve

    full = resolve(base, params, SweepConfig.model_validate(base).search.space)
    register(((full.get("eval") or {}).get("judge") or {}).get("api_key_env", ""))  # a name, never masked
    return SweepConfig.model_validate(expand(full))


@masking_errors
def train_loop(params: dict[str, Any], *, base: dict[str, Any], storage: str, tokens: tuple[str, dict],
               session: Any) -> None:
    t_start = time.perf_counter()
    import transformers
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training, set_peft_model_state_dict
    from peft.utils import get_peft_model_state_dict
    from transformers import get_scheduler

    from harness.storage import Storage
    from trainables.data.curriculum import CURRICULA
    from trainables.data.pipeline import prepare, subset_stats
    from trainables.data.prompt_template import use_prompt_template
    from trainables.models import bf16_supported, load_model

    cfg = trial_config(base, params)
    tc = cfg.train
    transformers.utils.logging.disable_progress_bar()  # the driver's live table is the progress display
    transformers.utils.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecations, not the user's concern
    store, trial_rel = Storage(storage), f"trials/{session.trial_id}"
    trial_dir = store.workdir(trial_rel)  # the trial's directory, or its local copy when storage is a URI
    nan_marker = trial_dir / "nan_loss.txt"
    if nan_marker.exists():  # a retry would train into the same NaN again: fail at once, same message
        raise FloatingPointError(nan_marker.read_text(encoding="utf-8"))
    from trainables.evaluate import check_inputs

    check_inputs(cfg.eval, trial_dir)  # evaluations that cannot score their inputs fail before training
    res = cfg.resources
    torch.set_num_threads(max(1, int(res.cpus_per_trial / res.workers_per_trial)))
    seed_everything(tc.seed)

    # 1. Model ---------------------------------------------------------------------------------
    device = pick_device(tc.device)
    if device == "cuda" and 0 < res.gpus_per_trial < 1:
        # Ray shares the GPU but does not police its memory: cap this process at its share.
        torch.cuda.set_per_process_memory_fraction(res.gpus_per_trial)
    model, tokenizer, load_times = load_model(
        cfg.model.name, cfg.model.quantization, cfg.model.trust_remote_code, device
    )
    use_prompt_template(tokenizer, cfg.data.prompt_template)  # data.prompt_template replaces the chat template
    use_bf16 = tc.bf16 == "on" or (tc.bf16 == "auto" and bf16_supported(device))
    autocast = make_autocast(device, use_bf16)
    scaler = torch.amp.GradScaler("cuda") if device == "cuda" and not use_bf16 else None  # fp16 autocast
    # Packing is only safe where the model keeps packed examples apart: check it on this model (once a worker).
    packed = tc.packing and packs_apart(model, (cfg.model.name, cfg.model.quantization, device, use_bf16), device,
                                        autocast)
    if tc.packing and not packed:
        print(f"train.packing: {cfg.model.name} lets packed examples see each other; using length-grouped batches")

    # 2. Data: select the subset, take its tokens from the sweep's table, order it -------------------
    # The driver tokenized the base subset and the held-out set once for the whole sweep; this trial
    # encodes only what it lacks (a searched selection's other examples), kept for this worker's next trials.
    planned_for, table = tokens
    tokens_of = worker_tokens(cfg.model.name, tokenizer, table if planned_for == redact(cfg.model.name) else {})
    encoded_cache: dict[int, Encoded] = {}

    def encoded(example) -> Encoded:
        key = id(example)
        if key not in encoded_cache:
            encoded_cache[key] = tokens_of(example, tc.max_seq_len)
        return encoded_cache[key]

    def n_tokens(example) -> int:
        return len(encoded(example)[0])

    prep = prepare(cfg.data, cfg.selection, tc.seed, n_tokens, curriculum=cfg.curriculum, model=model,
                   tokenizer=tokenizer, max_len=tc.max_seq_len)  # the base model scores loss / IFD if asked
    # A prompt longer than max_seq_len leaves no response token to learn from.
    train = [e for e in prep.train if any(y != IGNORE for y in encoded(e)[1][1:])]
    evals = [encoded(e) for e in prep.eval if any(y != IGNORE for y in encoded(e)[1][1:])]
    if not train or not evals:
        raise ValueError(f"train.max_seq_len: {tc.max_seq_len} truncates every response away; raise it")
    if len(train) < len(prep.train):  # the recorded subset is the one that trains
        prep.stats.update(subset_stats(train, n_tokens), dropped_prompt_too_long=len(prep.train) - len(train))
    if session.is_main:
        atomic_write_text(trial_dir / "selected_ids.json", json.dumps([e.id for e in train]))
    lengths = [n_tokens(e) for e in train]
    tokenized_in_trial = tokens_of.encoded  # 0 when the sweep's table held every example
    plan = CURRICULA.get(cfg.curriculum.order)(train, cfg.curriculum, tc.epochs, tc.seed, lengths)
    batches = order_batches(plan, lengths, tc.batch_size, packed=packed, group=tc.group_by_length,
                            group_size=tc.group_size, curriculum=cfg.curriculum.order)
    per_step = tc.grad_accum * session.world_size  # micro-batches per optimizer step, all workers together
    total_steps = math.ceil(len(batches) / per_step)
    reports_at = report_steps(total_steps, cfg.reports_per_trial)

    def micro_batch(indices: list[int]) -> Batch:
        rows = [encoded(train[i]) for i in indices]
        return pack(rows, device=device) if packed else collate(rows, tokenizer.pad_token_id, device)

    # 3. LoRA (on 4-bit weights for nf4) -------------------------------------------------------
    checkpointing = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
    if cfg.model.quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=tc.gradient_checkpointing,
                                                **checkpointing)
    elif tc.gradient_checkpointing:
        model.gradient_checkpointing_enable(**checkpointing)
    model = get_peft_model(model, LoraConfig(
        r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
    ))
    params = [p for p in model.parameters() if p.requires_grad]
    trainable_params = sum(p.numel() for p in params)
    optimizer = torch.optim.AdamW(params, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = get_scheduler(tc.scheduler, optimizer, round(tc.warmup_ratio * total_steps), total_steps)
    # Compiled for the training forward only; eval and saving use the plain module (same weights).
    forward = session.wrap(model)  # DistributedDataParallel with several workers, else the model itself
    forward = torch.compile(forward, dynamic=True) if tc.compile else forward

    step, tokens_seen, positions, train_seconds, heldout_seconds, best, resumed = 0, 0, 0, 0.0, 0.0, math.inf, {}
    checkpoint = session.checkpoint()
    if checkpoint:  # a retry or a resumed sweep: continue where the last report left off
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", weights_only=False)
        set_peft_model_state_dict(model, state["adapter"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        step, tokens_seen, train_seconds, best = state["step"], state["tokens_seen"], state["train_seconds"], state["best"]
        positions, heldout_seconds = state["positions"], state["heldout_seconds"]
        torch.set_rng_state(state["rng"])
        resumed = {"resumed_from_report": state["metrics"]["report"]}
        # Finished, or stopped by the scheduler (the driver's .ended marker), before the driver died: say its
        # last report again (its own figures), nothing to train.
        if step >= total_steps or trial_ended(trial_dir) == "complete":
            session.report({**state["metrics"], **resumed})
            return

    static = {
        **prep.stats, "trainable_params": trainable_params, "seed": tc.seed, "total_steps": total_steps,
        "packing": float(packed), "tokenized_in_trial": tokenized_in_trial,
        "setup_seconds": time.perf_counter() - t_start,
        **load_times, **resumed,
    }

    # 4. Train: accumulate, step, and at each report point evaluate + checkpoint ---------------
    # Nothing in this loop waits for the device except the report: losses add up on the device.
    model.train()
    window_loss, window_tokens, t_window = torch.zeros((), device=device), 0, time.perf_counter()
    while step < total_steps:
        step_batches = [micro_batch(mb) for mb in batches[step * per_step : (step + 1) * per_step]]
        n_labels = sum(b.n_labels for b in step_batches)
        window_loss += train_step(forward, session.step_share(step_batches), autocast, optimizer, scheduler, params,
                                  tc.max_grad_norm, n_labels, scaler)
        window_tokens += n_labels
        tokens_seen += sum(b.n_tokens for b in step_batches)
        positions += sum(b.n_positions for b in step_batches)
        step += 1
        if step not in reports_at:
            continue

        train_loss = session.all_sum(window_loss) / max(window_tokens, 1)  # the one host sync: reports only
        train_seconds += time.perf_counter() - t_window
        t_eval, eval_loss_sets = time.perf_counter(), {}
        eval_loss = mean_loss(model, evals, tc.batch_size * 2, tokenizer.pad_token_id, device, autocast, packed)
        if cfg.eval.perplexity_every_report:  # named test sets too, so early stopping can use ppl_<stem>
            eval_loss_sets = _report_perplexity(cfg, model, tokenizer, trial_dir, prep.train)
        heldout_seconds += time.perf_counter() - t_eval
        if not math.isfinite(eval_loss) or not math.isfinite(train_loss):
            message = f"loss became NaN/inf at step {step}; lower train.lr"
            atomic_write_text(nan_marker, message)
            raise FloatingPointError(message)
        best = min(best, eval_loss)
        metrics = {
            **static, **_memory(device), "report": sorted(reports_at).index(step) + 1,
            "step": step, "epoch": step / total_steps * tc.epochs, "tokens_seen": tokens_seen,
            "train_loss": train_loss, "eval_loss": eval_loss, "best_eval_loss": best,
            "eval_perplexity": math.exp(min(eval_loss, 50)), "lr": scheduler.get_last_lr()[0],
            "train_seconds": train_seconds, "tokens_per_second": tokens_seen / max(train_seconds, 1e-9),
            "heldout_seconds": heldout_seconds, "padding_fraction": 1 - tokens_seen / max(positions, 1),
            **eval_loss_sets,
        }
        if step == total_steps and session.is_main:  # 5. end of trial: the expensive evaluations join the last report
            metrics.update(_final_evaluations(cfg, model, tokenizer, trial_dir, prep.train))
            from trainables.evaluate import require_objective

            require_objective(cfg.search.metric, metrics)
            if cfg.output.save_adapter:
                model.save_pretrained(trial_dir / "adapter")
            store.push(trial_rel)
        session.report(metrics, {
            "adapter": get_peft_model_state_dict(model), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "step": step, "tokens_seen": tokens_seen,
            "train_seconds": train_seconds, "best": best, "rng": torch.get_rng_state(),
            "metrics": session.tagged(metrics),  # as reported
            "positions": positions, "heldout_seconds": heldout_seconds,
            "scaler": scaler.state_dict() if scaler else None,
        })
        window_loss, window_tokens, t_window = torch.zeros((), device=device), 0, time.perf_counter()


def _memory(device: str) -> dict[str, float]:
    """This worker's memory, reported with every result: rss_mb now, peak_rss_mb (and peak_gpu_mb on a
    GPU) since the trial started (trainables.distributed.trial_process resets the peaks when a worker
    runs another trial; where Linux's clear_refs is not available, since the worker started)."""
    import resource

    import psutil

    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    out = {"rss_mb": psutil.Process().memory_info().rss / 2**20, "peak_rss_mb": peak_kb / 1024}
    if device == "cuda":
        out["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def _report_perplexity(cfg: Any, model: Any, tokenizer: Any, trial_dir: Path, pool: list) -> dict[str, float]:
    """loss_<stem> / ppl_<stem> of eval.perplexity's files at a training report."""
    from trainables.evaluate import EvalContext, perplexity

    model.eval()
    with torch.no_grad():
        out = perplexity.run(EvalContext(cfg.eval, model, tokenizer, trial_dir, pool))
    model.train()
    return out


def _final_evaluations(cfg: Any, model: Any, tokenizer: Any, trial_dir: Path, pool: list) -> dict[str, float]:
    """Configured end-of-trial evaluations (perplexity on test sets, MCQ, judge...)."""
    try:
        from trainables.evaluate import run_all
    except ImportError:
        return {}
    model.eval()
    with torch.no_grad():
        return run_all(cfg.eval, model, tokenizer, trial_dir, pool)
