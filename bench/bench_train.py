"""Training speed: our trainable vs TRL's SFTTrainer vs a plain HF Trainer, sweep overhead, model
load, time to the best configuration, and scaling. One run, one machine, ratios within the run.

    pip install -e '.[bench]'            # trl (pinned beside torch, so torch is left alone)
    python bench/bench_train.py                        # load + throughput + sweep overhead (~20 min, 2 CPUs)
    python bench/bench_train.py --time-to-best --scaling   # everything (31 min on 2 AVX-512 BF16 cores, 12-01)
    python bench/bench_train.py --scaling              # + training time vs subset size / sequence length
    python bench/bench_train.py --time-to-best         # + ASHA+TPE vs full grid (real sweeps; slow)
    python bench/bench_train.py --only sweep --sweep-fresh     # overhead, reused vs fresh trial processes
    python bench/bench_train.py --only sweep --sweep-trials-per-slot 2   # shorter sweeps (fixed costs weigh more)
    python bench/bench_train.py --only throughput --steps 8     # one section, quicker
    python bench/bench_train.py --only packed                  # 8 trials: pack 4 x 2 vs 8 / 2 unpacked at once

Every runner trains the same LoRA (r 8, alpha 16, dropout 0.05, all-linear, the same seeded init) on
the same real Alpaca rows, tokenized once by the trainable's own `encode` (chat template, prompt
masked), in the same order, with the same batch size, sequence length, optimizer (AdamW, constant
lr, clip 1.0) and number of optimizer steps. "ours" calls the trainable's own functions
(order_batches, pack / collate, train_step), so it measures the real code path.

Throughput = real (non-padding) tokens per second over steps 2..N (step 1 warms up). Loss = mean
response-token loss per step; step 1 runs before any update, so runners that see the same first
micro-batch must agree on it to numerical noise (LoRA's B starts at 0, dropout cannot matter yet).

On a CUDA machine the same command loads the model in 4-bit nf4 with bf16 compute and adds peak
memory (torch.cuda.max_memory_allocated) and model FLOPs utilisation (6 x matmul params per token
over the GPU's dense bf16 peak). Results: a table on stdout and bench/results/bench_train-<time>.json (--out DIR).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import pickle
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from trainables.batching import Encoded, padding_fraction  # noqa: E402
from trainables.data.formats import load_examples  # noqa: E402
from trainables.data.tokenize import IGNORE, Tokens, encode  # noqa: E402
from trainables.distributed import MMAP_THRESHOLD  # noqa: E402

MODEL = "smollm2-135m-instruct"
DATA = "alpaca/random_9k.json"
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05, "target_modules": "all-linear"}
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40": 181e12, "L4": 121e12, "A10": 125e12}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- shared setup


class Setup:
    """Device, precision, tokenizer and the tokenized rows every runner trains on."""

    def __init__(self, args: argparse.Namespace):
        from trainables.models import bf16_supported, load_model
        from trainables.training import make_autocast

        self.args = args
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.quantization = "nf4" if self.device == "cuda" else "none"
        self.bf16 = bf16_supported(self.device)
        self.autocast = make_autocast(self.device, self.bf16)
        torch.set_num_threads(args.threads)
        _, self.tokenizer, _ = load_model(MODEL, self.quantization, device=self.device)
        pool = load_examples(DATA)
        random.Random(0).shuffle(pool)
        rows = [encode(self.tokenizer, e.messages, args.max_len) for e in pool[: args.steps * args.batch_size * 2]]
        self.rows: list[Encoded] = [r for r in rows if any(y != IGNORE for y in r[1][1:])]

    def model(self, checkpointing: bool = False) -> Any:
        """A fresh base model with the same seeded LoRA for every runner (as train_trial sets it up)."""
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

        from trainables.models import load_model

        model = load_model(MODEL, self.quantization, device=self.device)[0]
        kwargs = {"gradient_checkpointing_kwargs": {"use_reentrant": False}}
        if self.quantization == "nf4":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing, **kwargs)
        elif checkpointing:
            model.gradient_checkpointing_enable(**kwargs)
        torch.manual_seed(0)
        return get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **LORA))

    def rows_for(self, n_steps: int) -> list[Encoded]:
        return self.rows[: n_steps * self.args.batch_size]


def summarize_run(name: str, step_times: list[float], step_cpu: list[float], step_tokens: list[int],
                  losses: list[float], padding: float | None, note: str = "", **extra: Any) -> dict[str, Any]:
    """step_times[i] / step_cpu[i] = wall clock / process CPU time at the end of step i ([0] = start).
    Throughput over steps 2..N (step 1 warms up), three ways: the median of the per-step rates (a
    step during which the shared machine paused the process does not count), total / total, and
    real tokens per CPU-second of the process (what contention from other processes barely moves)."""
    timed = step_times[-1] - step_times[1]
    tokens = sum(step_tokens[1:])
    cpu = step_cpu[-1] - step_cpu[1]
    rates = [n / (b - a) for n, a, b in zip(step_tokens[1:], step_times[1:-1], step_times[2:], strict=True)]
    out = {"runner": name, "steps": len(step_tokens), "tokens": sum(step_tokens), "seconds": step_times[-1] - step_times[0],
           "tokens_per_second": statistics.median(rates) if rates else float("nan"),
           "tokens_per_second_total": tokens / timed if timed > 0 else float("nan"),
           "tokens_per_cpu_second": tokens / cpu if cpu > 0 else float("nan"), "losses": losses,
           "step_seconds": [b - a for a, b in zip(step_times, step_times[1:], strict=False)],
           "timed_seconds": timed, "timed_cpu_seconds": cpu, "first_step_tokens": step_tokens[0],
           "padding_fraction": padding, "note": note, **extra}
    if torch.cuda.is_available():
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


# ----------------------------------------------------------------------------- runners


def run_ours(s: Setup, name: str, *, packing: bool, group: bool, compile_: bool = False,
             checkpointing: bool = False, fp32: bool = False) -> dict[str, Any]:
    """The trainable's own path: order_batches -> pack / collate -> train_step. `fp32`: without the
    bf16 autocast the machine supports (what it gains, in the same run)."""
    from transformers import get_scheduler

    from trainables.batching import collate, pack, packing_isolates
    from trainables.training import make_autocast, order_batches, train_step

    a = s.args
    autocast = make_autocast(s.device, False) if fp32 else s.autocast
    model = s.model(checkpointing)
    packed = packing and packing_isolates(model, s.device, autocast)
    rows = s.rows_for(a.steps)
    lengths = [len(x) for x, _ in rows]
    order = order_batches([list(range(len(rows)))], lengths, a.batch_size, packed=packed, group=group,
                          group_size=None, curriculum="none")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    sched = get_scheduler("constant", opt)
    forward = torch.compile(model, dynamic=True) if compile_ else model
    model.train()
    _sync()
    times, cpu, tokens, losses = [time.perf_counter()], [time.process_time()], [], []
    for mb in order[: a.steps]:
        picked = [rows[i] for i in mb]
        b = pack(picked, device=s.device) if packed else collate(picked, s.tokenizer.pad_token_id, s.device)
        loss = train_step(forward, [b], autocast, opt, sched, params, 1.0)
        losses.append(loss / b.n_labels)  # stays on the device: no sync in the timed loop
        tokens.append(b.n_tokens)
        times.append(time.perf_counter())
        cpu.append(time.process_time())
    _sync()
    times[-1] = time.perf_counter()
    return summarize_run(name, times, cpu, tokens, [float(x) for x in losses],
                         padding=0.0 if packed else padding_fraction(order[: a.steps], lengths))


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def step_clock() -> Any:
    """A TrainerCallback that stamps the start of the first optimizer step and the end of every one."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.cpu: list[float] = []

        def on_step_begin(self, args, state, control, **kw):
            if not self.times:
                _sync()
                self.times.append(time.perf_counter())
                self.cpu.append(time.process_time())

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == args.max_steps:
                _sync()
            self.times.append(time.perf_counter())
            self.cpu.append(time.process_time())

    return Clock()


def _hf_args(s: Setup, out: str, cls: Any, **kw: Any) -> Any:
    a = s.args
    return cls(
        output_dir=out, max_steps=a.steps, per_device_train_batch_size=a.batch_size, gradient_accumulation_steps=1,
        learning_rate=a.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        optim="adamw_torch", logging_steps=1, save_strategy="no", report_to=[], seed=0, bf16=s.bf16, fp16=False,
        use_cpu=s.device == "cpu", dataloader_num_workers=0, disable_tqdm=True, gradient_checkpointing=False, **kw,
    )


def _sequential(trainer_cls: Any) -> Any:
    """The same trainer, reading the data set in order (ours is given the same order)."""

    class Sequential(trainer_cls):
        def _get_train_sampler(self, train_dataset=None):
            from torch.utils.data import SequentialSampler

            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    return Sequential


def run_hf(s: Setup, name: str, *, trl: bool, packing: bool = False, padding_free: bool = False) -> dict[str, Any]:
    """TRL SFTTrainer (optionally packing / padding-free) or a plain transformers Trainer."""
    from datasets import Dataset

    rows = s.rows_for(s.args.steps * (4 if packing else 1))  # packing puts several rows in one
    ds = Dataset.from_dict({"input_ids": [x for x, _ in rows], "labels": [y for _, y in rows]})
    clock = step_clock()
    with tempfile.TemporaryDirectory() as out:
        if trl:
            from trl import SFTConfig, SFTTrainer

            # padding_free without packing refuses max_length (the rows are already truncated to it)
            max_length = None if padding_free and not packing else s.args.max_len
            args = _hf_args(s, out, SFTConfig, max_length=max_length, packing=packing,
                            padding_free=padding_free, dataset_num_proc=None, shuffle_dataset=False)
            trainer = _sequential(SFTTrainer)(model=s.model(), args=args, train_dataset=ds,
                                              processing_class=s.tokenizer, callbacks=[clock])
        else:
            from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

            args = _hf_args(s, out, TrainingArguments)
            trainer = _sequential(Trainer)(model=s.model(), args=args, train_dataset=ds, callbacks=[clock],
                                           data_collator=DataCollatorForSeq2Seq(s.tokenizer, padding=True))
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        with contextlib.redirect_stdout(sys.stderr):  # their per-step log lines; our table owns stdout
            trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        tokens, padding = _hf_step_tokens(trainer, s.args.steps, s.args.batch_size, packing or padding_free)
    return summarize_run(name, clock.times, clock.cpu, tokens, losses, padding)


def _hf_step_tokens(trainer: Any, steps: int, batch_size: int, unpadded: bool) -> tuple[list[int], float]:
    """Real tokens per step, read off the prepared data set in the (sequential) order it was read."""
    ds = trainer.train_dataset
    per_row = [len(r) for r in ds["input_ids"]]
    tokens, positions = [], 0
    for k in range(steps):
        chunk = per_row[k * batch_size : (k + 1) * batch_size]
        tokens.append(sum(chunk))
        positions += sum(chunk) if unpadded else len(chunk) * max(chunk)
    return tokens, 1 - sum(tokens) / max(positions, 1)


def throughput(s: Setup, only: set[str] | None) -> list[dict[str, Any]]:
    """Every runner (ours in its modes, TRL's SFTTrainer, HF's Trainer) on the same data, repeated in
    alternating order; one merged row per runner, with its ratio to SFTTrainer and its loss curve's
    distance from ours."""
    runners = [(n, fn) for n, fn in _runners(s) if not only or any(o in n for o in only)]
    return _compare([_merge(rs) for rs in _run_repeats(s, runners).values()])


def _runners(s: Setup) -> list[tuple[str, Any]]:
    runners = [
        ("ours (packed, default)", lambda: run_ours(s, "ours (packed, default)", packing=True, group=False)),
        ("ours (length-grouped)", lambda: run_ours(s, "ours (length-grouped)", packing=False, group=True)),
        ("ours (padded, same order)", lambda: run_ours(s, "ours (padded, same order)", packing=False, group=False)),
        ("trl SFTTrainer", lambda: run_hf(s, "trl SFTTrainer", trl=True)),
        ("trl SFTTrainer padding_free", lambda: run_hf(s, "trl SFTTrainer padding_free", trl=True, padding_free=True)),
        ("trl SFTTrainer packing (bfd)", lambda: run_hf(s, "trl SFTTrainer packing (bfd)", trl=True, packing=True)),
        ("hf Trainer", lambda: run_hf(s, "hf Trainer", trl=False)),
    ]
    if s.bf16 and s.device == "cpu":
        runners.append(("ours (packed, fp32)", lambda: run_ours(s, "ours (packed, fp32)", packing=True, group=False,
                                                                 fp32=True)))
    if s.args.compile:
        runners.append(("ours (packed, compile)", lambda: run_ours(s, "ours (packed, compile)", packing=True,
                                                                     group=False, compile_=True)))
    if s.args.checkpointing:
        runners.append(("ours (packed, grad ckpt)", lambda: run_ours(s, "ours (packed, grad ckpt)", packing=True,
                                                                       group=False, checkpointing=True)))
    return runners


def _run_repeats(s: Setup, runners: list[tuple[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n, _ in runners}
    for rep in range(s.args.repeats):  # alternate the order: drifting load on a shared machine evens out
        for name, fn in runners if rep % 2 == 0 else runners[::-1]:
            log(f"throughput: {name} (repeat {rep + 1}/{s.args.repeats}) ...")
            try:
                r = fn()
            except Exception as e:  # noqa: BLE001 - one runner failing (e.g. a TRL mode on CPU) is a result too
                r = {"runner": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
            log(f"  {json.dumps({k: v for k, v in r.items() if k != 'losses'}, default=str)}")
            runs[name].append(r)
    return runs


def _compare(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ref = next((r for r in results if r["runner"] == "trl SFTTrainer" and "losses" in r), None)
    ours = next((r for r in results if r["runner"] == "ours (packed, default)" and "losses" in r), None)
    for r in results:
        if "losses" not in r:
            continue
        r["note"] = NOTES.get(r["runner"], "")
        r["x_sft"] = r["tokens_per_second"] / ref["tokens_per_second"] if ref else None
        r["x_sft_cpu"] = r["tokens_per_cpu_second"] / ref["tokens_per_cpu_second"] if ref else None
        if ours and r["runner"] not in NOTES:  # same micro-batches in the same order: the curves must match
            r["max_abs_loss_diff_vs_ours"] = max(abs(a - b) for a, b in zip(r["losses"], ours["losses"], strict=False))
    return results


NOTES = {  # runners whose micro-batches differ from the shared order (so their loss@1 is another batch's)
    "ours (length-grouped)": "regrouped by length: other micro-batches",
    "trl SFTTrainer packing (bfd)": "bfd packing: rows of up to max_len, ~2x examples per step",
}


def _merge(repeats: list[dict[str, Any]]) -> dict[str, Any]:
    """One row per runner: throughput over all repeats (timed tokens / timed seconds), each repeat's too."""
    ok = [r for r in repeats if "error" not in r]
    if not ok:
        return repeats[0]
    out = dict(ok[0])
    out["tokens_per_second"] = statistics.median(r["tokens_per_second"] for r in ok)
    out["tokens_per_second_total"] = sum(r["tokens"] - r["first_step_tokens"] for r in ok) / \
        sum(r["timed_seconds"] for r in ok)
    out["tokens_per_cpu_second"] = sum(r["tokens"] - r["first_step_tokens"] for r in ok) / \
        sum(r["timed_cpu_seconds"] for r in ok)
    out["per_repeat_tokens_per_second"] = [r["tokens_per_second"] for r in ok]
    out["per_repeat_tokens_per_cpu_second"] = [r["tokens_per_cpu_second"] for r in ok]
    return out


# ----------------------------------------------------------------------------- model load


def model_load() -> dict[str, Any]:
    """First load (GGUF -> safetensors conversion into a throw-away cache) and cached loads, each in a
    fresh process as a trial does it; plus the imports every trial process pays before that."""
    code = ("import time; t=time.perf_counter(); import torch, transformers, peft, ray.tune; "
            "from trainables.models import load_model; t_imp=time.perf_counter()-t; "
            f"_, _, lt = load_model({MODEL!r}); import json; print(json.dumps({{**lt, 'import_seconds': t_imp}}))")
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
        env = {**os.environ, "HARNESS_CACHE_DIR": cache, "PYTHONPATH": str(REPO)}
        for label in ("first", "cached", "cached_again"):
            proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO)
            if proc.returncode:
                return {"error": proc.stderr.strip().splitlines()[-1]}
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            log(f"model load {label}: {out[label]}")
    return out


# ----------------------------------------------------------------------------- sweeps


def run_sweep(name: str, out: Path, sweep: str, overrides: list[str], env_extra: dict[str, str] | None = None,
              ) -> dict[str, Any]:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(REPO), **(env_extra or {})}
    t0, started = time.perf_counter(), time.time()
    proc = subprocess.run([sys.executable, "-m", "harness.sweep", sweep, f"name={name}", f"output.dir={out}",
                           "--no-report", *overrides], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"sweep {name} failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1]}")
    with open(out / name / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    history = {}
    for r in rows:
        path = out / name / "trials" / r["trial_id"] / "metrics.jsonl"
        history[r["trial_id"]] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {"wall": wall, "rows": rows, "history": history, "started": started, "ended": started + wall}


def sweep_overhead(tmp: Path, n_examples: int, fresh_too: bool = False, per_slot: int = 4,
                   concurrency: tuple[int, ...] = (1, 2)) -> list[dict[str, Any]]:
    """wall time of a real sweep (sweeps/smoke.yaml: TPE, W&B offline; FIFO so every trial runs to the
    end) / the trials' own training time, at each concurrency c, with `per_slot` trials per slot (c x
    per_slot trials): every slot runs the same number of trials at every concurrency, and none idles
    while the last trial runs alone, which would be the sweep's shape, not its overhead. Workers reused
    (the default); `fresh_too`: the same sweeps again with a fresh process per trial."""
    overrides = [f"selection.n={n_examples}", "data.eval_size=8", "train.epochs=1", "train.max_seq_len=128",
                 "train.evals_per_epoch=2", "scheduler.type=fifo"]
    out = []
    for c, reuse in [(c, True) for c in concurrency] + ([(c, False) for c in concurrency] if fresh_too else []):
        trials = per_slot * c
        log(f"sweep overhead: {trials} trials, concurrency {c}, workers {'reused' if reuse else 'fresh'} ...")
        r = run_sweep(f"overhead_{trials}x_c{c}_{'reused' if reuse else 'fresh'}", tmp, "sweeps/smoke.yaml",
                      overrides + [f"search.num_samples={trials}", f"search.max_concurrent={c}",
                                   f"ray.reuse_workers={str(reuse).lower()}"])
        # When the trials ran: Ray's time_total_s counts from the trial's start (its setup included).
        starts = [h[0]["timestamp"] - h[0]["time_total_s"] for h in r["history"].values() if h]
        ends = [h[-1]["timestamp"] for h in r["history"].values() if h]
        f = {k: sum(float(row.get(k) or 0) for row in r["rows"]) for k in
             ("train_seconds", "heldout_seconds", "eval_seconds", "setup_seconds", "model_load_seconds",
              "tokens_seen")}
        # what the trials were asked to do: train, held-out eval at each report, end-of-trial evaluations
        work = f["train_seconds"] + f["heldout_seconds"] + f["eval_seconds"]
        out.append({"concurrency": c, "reuse_workers": reuse, "trials": len(r["rows"]), "wall_seconds": r["wall"], **f,
                    # the driver alone: start-up (imports, plan, Ray) until the first trial started, and
                    # wrap-up (W&B runs closed, results, Ray shut down) after the last report
                    "before_first_trial_seconds": min(starts) - r["started"],
                    "after_last_report_seconds": r["ended"] - max(ends),
                    "wall_over_train": r["wall"] / f["train_seconds"],
                    "slot_overhead": r["wall"] * c / f["train_seconds"],
                    "slot_overhead_with_eval": r["wall"] * c / work,
                    # the rest of the slot time: Ray start, worker spawn, checkpoints, results, W&B, driver
                    "other_seconds": r["wall"] * c - work - f["setup_seconds"]})
        log(f"  {out[-1]}")
    return out


def packed_sweeps(tmp: Path, n_examples: int, only: set[str] | None = None) -> list[dict[str, Any]]:
    """8 trials of a lora_rank-like space (r x lr), all at once both ways: `pack: 4` in 2 pack workers of 1 CPU
    vs 8 unpacked trials of 0.25 CPU each; and today's default, 2 unpacked trials of 1 CPU at a time. Wall
    time, and the sum over processes of each one's peak RSS: a pack's members report their pack worker's and,
    as relay_peak_rss_mb, that of their own Tune trial process, which relays the pack's reports (both counted);
    a reused worker's trials report their own."""
    space = json.dumps({"lora.r": {"grid": [4, 8, 16, 32]}, "train.lr": {"grid": [3e-4, 1e-3]}})
    common = ["sweeps/smoke.yaml", "search.algorithm=grid", "search.num_samples=1", f"search.space={space}",
              f"selection.n={n_examples}", "data.eval_size=8", "train.max_seq_len=128", "train.evals_per_epoch=2",
              "scheduler.type=fifo", "wandb.enabled=false", "lora.dropout=0"]
    arms = [("pack4_x2", ["resources.pack=4", "resources.cpus_per_trial=1", "search.max_concurrent=8"]),
            # the 4 members' rows in one forward/backward per round (a GPU's default; the CPU's: one member a pass)
            ("pack4_x2_onepass", ["resources.pack=4", "resources.cpus_per_trial=1", "search.max_concurrent=8",
                                  "resources.pack_members_per_pass=4"]),
            # a pack's activations grow with the rows of a pass; recomputing them is what the base can't share
            ("pack4_x2_ckpt", ["resources.pack=4", "resources.cpus_per_trial=1", "search.max_concurrent=8",
                               "train.gradient_checkpointing=true"]),
            ("unpacked_x8", ["resources.cpus_per_trial=0.25", "search.max_concurrent=8"]),
            # the allocator setting every pack process has (distributed.MMAP_THRESHOLD), given to every trial
            # through the environment Ray's workers inherit: how much of a pack's saving is the allocator's
            ("unpacked_x8_mmap", ["resources.cpus_per_trial=0.25", "search.max_concurrent=8"]),
            ("unpacked_x2", ["resources.cpus_per_trial=1", "search.max_concurrent=2"])]
    out = []
    for name, extra in [(n, e) for n, e in arms if not only or n in only]:
        log(f"packed sweeps: {name} ...")
        env = {"MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)} if name.endswith("_mmap") else None
        r = run_sweep(name, tmp, common[0], common[1:] + extra, env)
        peaks: dict[Any, float] = {}  # worker -> its peak: a pack (its members relay its figure), else a process
        relays: dict[str, float] = {}  # a packed trial's own process
        for row in r["rows"]:
            for entry in r["history"].get(row["trial_id"], []):
                worker = row.get("pack_id") or entry.get("pid")
                if worker and "peak_rss_mb" in entry:
                    peaks[worker] = max(peaks.get(worker, 0.0), float(entry["peak_rss_mb"]))
                if "relay_peak_rss_mb" in entry:
                    relays[row["trial_id"]] = max(relays.get(row["trial_id"], 0.0), float(entry["relay_peak_rss_mb"]))
        tokens = sum(float(row.get("tokens_seen") or 0) for row in r["rows"])
        out.append({"arm": name, "trials": len(r["rows"]), "wall_seconds": r["wall"], "workers": len(peaks),
                    "workers_peak_rss_mb": sum(peaks.values()), "relays_peak_rss_mb": sum(relays.values()),
                    "sum_peak_rss_mb": sum(peaks.values()) + sum(relays.values()), "tokens_per_second": tokens / r["wall"],
                    "eval_loss": {row["trial_id"]: row.get("eval_loss") for row in r["rows"]}})
        log(f"  {out[-1]}")
    return out


def _print_packed(result: dict[str, Any]) -> None:
    arms = {r["arm"]: r for r in result.get("packed", [])}
    if not arms:
        return
    print(f"\n{'arm':<14}{'trials':>7}{'wall s':>8}{'workers':>8}{'workers MB':>11}{'relays MB':>10}"
          f"{'sum peak RSS MB':>16}{'tokens/s':>9}")
    for r in arms.values():
        print(f"{r['arm']:<14}{r['trials']:>7}{r['wall_seconds']:>8.0f}{r['workers']:>8}{r['workers_peak_rss_mb']:>11.0f}"
              f"{r['relays_peak_rss_mb']:>10.0f}{r['sum_peak_rss_mb']:>16.0f}{r['tokens_per_second']:>9.1f}")
    u8, u2, u8m = arms.get("unpacked_x8"), arms.get("unpacked_x2"), arms.get("unpacked_x8_mmap")
    for name, label in (("pack4_x2", "pack 4 x 2"), ("pack4_x2_onepass", "pack 4 x 2, one pass per round"),
                        ("pack4_x2_ckpt", "pack 4 x 2, gradient checkpointing")):
        p = arms.get(name)
        if p and u8:
            print(f"{label} vs 8 unpacked: wall {p['wall_seconds'] / u8['wall_seconds']:.2f}x (target <= 1.0), "
                  f"peak memory {p['sum_peak_rss_mb'] / u8['sum_peak_rss_mb']:.2f}x (target <= 0.4)")
        if p and u8m:
            print(f"{label} vs 8 unpacked with the pack's allocator setting: wall "
                  f"{p['wall_seconds'] / u8m['wall_seconds']:.2f}x, peak memory "
                  f"{p['sum_peak_rss_mb'] / u8m['sum_peak_rss_mb']:.2f}x")
        if p and u2:
            print(f"{label} vs today's default (2 unpacked at a time): wall "
                  f"{p['wall_seconds'] / u2['wall_seconds']:.2f}x, peak memory {p['sum_peak_rss_mb'] / u2['sum_peak_rss_mb']:.2f}x")


def time_to_best(tmp: Path) -> dict[str, Any]:
    """A lora_rank-like space (rank x lr): full grid vs Optuna TPE + ASHA; compute (training tokens of
    every trial so far) until some report is within 1% of the grid's best eval_loss."""
    common = ["selection.n=16", "data.eval_size=8", "train.epochs=2", "train.max_seq_len=128",
              "train.evals_per_epoch=2", "search.max_concurrent=2", "wandb.enabled=false"]
    space_grid = ["search.space={lora.r: {grid: [4, 16, 64]}, train.lr: {grid: [1.0e-4, 3.0e-4, 1.0e-3]}, "
                  "lora.alpha: {tie: lora.r, times: 2}}", "search.algorithm=grid", "search.num_samples=1",
                  "scheduler.type=fifo"]
    space_tpe = ["search.space={lora.r: {choice: [4, 16, 64]}, train.lr: {choice: [1.0e-4, 3.0e-4, 1.0e-3]}, "
                 "lora.alpha: {tie: lora.r, times: 2}}", "search.algorithm=optuna", "search.num_samples=6",
                 "scheduler.type=asha", "scheduler.grace_period=1", "scheduler.reduction_factor=2"]
    log("time to best: grid ...")
    grid = run_sweep("ttb_grid", tmp, "sweeps/smoke.yaml", common + space_grid)
    log("time to best: TPE + ASHA ...")
    tpe = run_sweep("ttb_tpe_asha", tmp, "sweeps/smoke.yaml", common + space_tpe)
    best = min(float(r["eval_loss"]) for r in grid["rows"])
    target = best * 1.01

    def compute_until(run: dict[str, Any]) -> tuple[float | None, float]:
        events = sorted((h.get("timestamp", 0), h.get("training_iteration", 0), tid, h)
                        for tid, hist in run["history"].items() for h in hist)
        seen: dict[str, float] = {}
        for _, _, tid, h in events:
            seen[tid] = float(h["tokens_seen"])
            if float(h["eval_loss"]) <= target:
                return sum(seen.values()), sum(seen.values())
        return None, sum(seen.values())

    grid_total = sum(float(r["tokens_seen"]) for r in grid["rows"])
    tpe_total = sum(float(r["tokens_seen"]) for r in tpe["rows"])  # the whole TPE+ASHA sweep
    tpe_found, _ = compute_until(tpe)
    grid_found, _ = compute_until(grid)
    return {
        "grid_best_eval_loss": best, "target": target, "grid_trials": len(grid["rows"]),
        "tpe_trials": len(tpe["rows"]), "tpe_best_eval_loss": min(float(r["eval_loss"]) for r in tpe["rows"]),
        "grid_tokens_total": grid_total, "grid_tokens_to_target": grid_found,
        "tpe_tokens_total": tpe_total, "tpe_tokens_to_target": tpe_found,
        "tpe_fraction_of_grid": (tpe_found / grid_total) if tpe_found else None,
        "tpe_sweep_fraction_of_grid": tpe_total / grid_total,
        "grid_wall": grid["wall"], "tpe_wall": tpe["wall"],
        "stopped_early": sum(r["status"] == "EARLY_STOPPED" for r in tpe["rows"]),
    }


# ----------------------------------------------------------------------------- scaling


def scaling(s: Setup) -> list[dict[str, Any]]:
    """Training time (ours, packed, one epoch) vs subset size and sequence length, next to the data
    pipeline's selection (load + hygiene + select) and tokenization time for that subset."""
    from harness.config import SweepConfig
    from trainables.data.pipeline import prepare

    out = []
    for n, max_len in [(25, 256), (50, 256), (100, 256), (200, 256), (50, 128), (50, 512)]:
        cfg = SweepConfig.model_validate({"name": "scale", "selection": {"n": n}, "train": {"max_seq_len": max_len}})
        t0 = time.perf_counter()
        prep = prepare(cfg.data, cfg.selection, 0, lambda e: 0, progress=False)  # noqa: B023 - used at once
        t_select = time.perf_counter() - t0
        t0 = time.perf_counter()  # the driver's plan: tokenize once for the sweep
        plan_tokens = Tokens(s.tokenizer)
        rows = [plan_tokens(e, max_len) for e in prep.train + prep.eval]
        t_tok = time.perf_counter() - t0
        blob = pickle.dumps(plan_tokens.table)
        t0 = time.perf_counter()  # each trial: the table from Ray's object store, then look the subset up
        trial_tokens = Tokens(s.tokenizer, pickle.loads(blob))
        assert [trial_tokens(e, max_len) for e in prep.train + prep.eval] == rows and trial_tokens.encoded == 0
        t_table = time.perf_counter() - t0
        train_rows = [r for r in rows[: len(prep.train)] if any(y != IGNORE for y in r[1][1:])]
        saved = s.rows
        s.rows = train_rows
        steps = -(-len(train_rows) // s.args.batch_size)
        old_steps, s.args.steps = s.args.steps, steps
        log(f"scaling: n={n} max_len={max_len} ({steps} steps) ...")
        r = run_ours(s, f"n={n} len={max_len}", packing=True, group=False)
        s.rows, s.args.steps = saved, old_steps
        train_seconds = r["tokens"] / r["tokens_per_second"]  # at the median step rate: pauses do not count
        out.append({"n": n, "max_len": max_len, "tokens": r["tokens"], "train_seconds": train_seconds,
                    "wall_seconds": r["seconds"], "tokens_per_second": r["tokens_per_second"],
                    "select_seconds": t_select, "tokenize_seconds": t_tok,
                    "tokenize_ms_per_example": 1000 * t_tok / len(rows),
                    "table_ms_per_example": 1000 * t_table / len(rows),
                    "prep_share": (t_select + t_tok) / train_seconds})
        log(f"  {out[-1]}")
    return out


# ----------------------------------------------------------------------------- report


def mfu(tokens_per_second: float, n_params: int) -> float | None:
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return 6 * n_params * tokens_per_second / peak if peak else None


def matmul_params() -> int:
    """Parameters that take part in a matmul per token (the tied LM head counts, the lookup does not)."""
    import json as _json

    from trainables.models import resolve_model

    c = _json.loads((Path(resolve_model(MODEL)) / "config.json").read_text())
    d, f, n_layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    kv = d // c["num_attention_heads"] * c.get("num_key_value_heads", c["num_attention_heads"])
    return n_layers * (2 * d * d + 2 * d * kv + 3 * d * f) + d * vocab


def print_table(result: dict[str, Any]) -> None:
    """The result JSON as console tables, one section per measurement that ran."""
    _print_throughput(result)
    _print_model_load(result)
    _print_sweep_overhead(result)
    _print_time_to_best(result)
    _print_scaling(result)
    _print_packed(result)


def _print_throughput(result: dict[str, Any]) -> None:
    thr = [r for r in result.get("throughput", []) if "tokens_per_second" in r]
    ref = next((r for r in thr if r["runner"] == "trl SFTTrainer"), None)
    ours = next((r for r in thr if r["runner"].startswith("ours (packed, default)")), None)
    if thr:
        print(f"\nthroughput ({result['meta']['device']}, {result['meta']['precision']}, batch "
              f"{result['meta']['batch_size']}, max_len {result['meta']['max_len']}, {result['meta']['steps']} steps)")
        print(f"{'runner':<32}{'tok/s':>8}{'(total)':>8}{'tok/CPU-s':>10}{'x SFT':>7}{'(CPU)':>7}{'pad %':>6}"
              f"{'loss@1':>8}{'loss mean':>10}{'max|dL|':>9}{'peak GiB':>9}{'MFU':>7}  note")
        for r in result["throughput"]:
            if "error" in r:
                print(f"{r['runner']:<32}  failed: {r['error']}")
                continue
            x = r["x_sft"] if r.get("x_sft") is not None else float("nan")
            dl = f"{r['max_abs_loss_diff_vs_ours']:.4f}" if "max_abs_loss_diff_vs_ours" in r else "-"
            pad = "" if r["padding_fraction"] is None else f"{100 * r['padding_fraction']:.0f}"
            mem = f"{r['peak_memory_gib']:.2f}" if "peak_memory_gib" in r else "-"
            m = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
            xc = r["x_sft_cpu"] if r.get("x_sft_cpu") is not None else float("nan")
            print(f"{r['runner']:<32}{r['tokens_per_second']:>8.1f}{r['tokens_per_second_total']:>8.1f}"
                  f"{r['tokens_per_cpu_second']:>10.1f}{x:>7.2f}{xc:>7.2f}{pad:>6}{r['losses'][0]:>8.4f}"
                  f"{statistics.fmean(r['losses']):>10.4f}{dl:>9}{mem:>9}{m:>7}  {r['note']}")
        if ours and ref:
            print(f"ours / SFTTrainer = {ours['x_sft']:.2f}x by wall clock, {ours['x_sft_cpu']:.2f}x per CPU-second "
                  "(target >= 1.5)")


def _print_model_load(result: dict[str, Any]) -> None:
    if "model_load" in result and "cached" in result["model_load"]:
        ml = result["model_load"]
        print(f"\nmodel load: first (GGUF conversion) {ml['first']['model_load_seconds']:.1f} s, cached "
              f"{ml['cached']['model_load_seconds']:.2f} s / {ml['cached_again']['model_load_seconds']:.2f} s "
              f"(target < 2 s); imports per trial process {ml['cached']['import_seconds']:.1f} s")


def _print_sweep_overhead(result: dict[str, Any]) -> None:
    for r in result.get("sweep_overhead", []):
        workers = "" if "reuse_workers" not in r else (" reused" if r["reuse_workers"] else " fresh")
        print(f"sweep c={r['concurrency']}{workers}: {r['trials']} trials, wall {r['wall_seconds']:.0f} s (driver alone: "
              f"{r.get('before_first_trial_seconds', float('nan')):.0f} s before the first trial, "
              f"{r.get('after_last_report_seconds', float('nan')):.0f} s after the last report); summed over trials: "
              f"train {r['train_seconds']:.0f} s, eval {r['heldout_seconds'] + r['eval_seconds']:.0f} s, setup {r['setup_seconds']:.0f} s, "
              f"other {r['other_seconds']:.0f} s -> wall/train {r['wall_over_train']:.2f}, wall x c/train "
              f"{r['slot_overhead']:.2f}, wall x c/(train+eval) {r['slot_overhead_with_eval']:.2f} (target <= 1.10)")


def _print_time_to_best(result: dict[str, Any]) -> None:
    if "time_to_best" in result:
        t = result["time_to_best"]
        frac = t["tpe_fraction_of_grid"]
        print(f"\ntime to best: grid best {t['grid_best_eval_loss']:.4f} ({t['grid_trials']} trials, "
              f"{t['grid_tokens_total']:.0f} tokens); TPE+ASHA reached <= {t['target']:.4f} after "
              f"{t['tpe_tokens_to_target']} tokens = {'-' if frac is None else f'{100 * frac:.0f}%'} of the grid "
              f"(target <= 40%); {t['stopped_early']} of {t['tpe_trials']} stopped early; the whole TPE+ASHA sweep "
              f"{t['tpe_tokens_total']:.0f} tokens = {100 * t['tpe_sweep_fraction_of_grid']:.0f}% of the grid, "
              f"best {t['tpe_best_eval_loss']:.4f}; wall {t['tpe_wall']:.0f} s vs grid {t['grid_wall']:.0f} s")


def _print_scaling(result: dict[str, Any]) -> None:
    if result.get("scaling"):
        print(f"\n{'n':>5}{'max_len':>8}{'tokens':>8}{'train s':>9}{'tok/s':>8}{'select s':>9}{'tok ms/ex':>10}"
              f"{'table ms/ex':>12}{'prep %':>8}")
        for r in result["scaling"]:
            print(f"{r['n']:>5}{r['max_len']:>8}{r['tokens']:>8}{r['train_seconds']:>9.1f}{r['tokens_per_second']:>8.0f}"
                  f"{r['select_seconds']:>9.2f}{r['tokenize_ms_per_example']:>10.2f}{r['table_ms_per_example']:>12.3f}"
                  f"{100 * r['prep_share']:>8.1f}")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per runner")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a trial uses resources.cpus_per_trial, "
                                                            "1 in the shipped sweeps)")
    ap.add_argument("--repeats", type=int, default=1, help="run every runner this often, in alternating order")
    ap.add_argument("--only", default="", help="comma list of sections (load, throughput, sweep, scaling, ttb, packed) "
                                               "or runner name parts (e.g. 'ours,trl SFTTrainer')")
    ap.add_argument("--sweep-examples", type=int, default=100, help="examples per trial of the overhead sweeps "
                                                                    "(100 ~ a lora_rank trial; 16 shows fixed costs)")
    ap.add_argument("--sweep-trials-per-slot", type=int, default=4,
                    help="trials per concurrent slot of each overhead sweep (default 4: 4 at c=1, 8 at c=2)")
    ap.add_argument("--sweep-concurrency", default="1,2", help="comma list of concurrencies (default 1,2)")
    ap.add_argument("--sweep-fresh", action="store_true", help="also run the overhead sweeps with a fresh "
                                                                 "process per trial (ray.reuse_workers=false)")
    ap.add_argument("--pack-arms", default="", help="comma list of the packed section's arms (pack4_x2, "
                    "pack4_x2_onepass, pack4_x2_ckpt, unpacked_x8, unpacked_x8_mmap, unpacked_x2); default all")
    ap.add_argument("--pack-examples", type=int, default=100, help="examples per trial of the packed-sweep "
                                                                    "comparison (100 ~ a lora_rank trial)")
    ap.add_argument("--scaling", action="store_true", help="training time vs subset size and sequence length")
    ap.add_argument("--time-to-best", action="store_true", help="ASHA+TPE vs grid with real sweeps (slow)")
    ap.add_argument("--compile", action="store_true", help="add a torch.compile runner")
    ap.add_argument("--checkpointing", action="store_true", help="add a gradient-checkpointing runner")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"), help="directory of the result JSON")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    only = {o.strip() for o in args.only.split(",") if o.strip()}
    ap_sections = {"load", "throughput", "sweep", "scaling", "ttb", "packed"}
    sections = ap_sections & only or \
        {"load", "throughput", "sweep"} | ({"scaling"} if args.scaling else set()) | ({"ttb"} if args.time_to_best else set())
    runner_filter = only - ap_sections or None

    import transformers

    s = Setup(args)
    try:
        import trl

        trl_version = trl.__version__
    except ImportError:
        trl_version = None
    result: dict[str, Any] = {"meta": {
        "device": torch.cuda.get_device_name(0) if s.device == "cuda" else f"CPU {platform.processor() or platform.machine()}"
                  f" x{args.threads} threads",
        "precision": "nf4 + bf16" if s.quantization == "nf4" else ("bf16 autocast" if s.bf16 else "fp32"),
        "batch_size": args.batch_size, "max_len": args.max_len, "steps": args.steps, "lr": args.lr, "lora": LORA,
        "repeats": args.repeats,
        "torch": torch.__version__, "transformers": transformers.__version__, "trl": trl_version,
        "load_average": os.getloadavg(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench_train-{time.strftime('%Y%m%d-%H%M%S')}.json"

    def section(key: str, fn: Any) -> None:
        """Run one section; a failure is recorded, not fatal; results are saved after every section."""
        try:
            result[key] = fn()
        except Exception as e:  # noqa: BLE001 - keep what the other sections measured
            result[key + "_error"] = f"{type(e).__name__}: {e}"
            log(f"{key} failed: {e}")
        result["meta"]["load_average_end"] = os.getloadavg()
        path.write_text(json.dumps(result, indent=2, default=str))

    if "load" in sections:
        section("model_load", model_load)
    if "throughput" in sections:
        n = matmul_params()
        section("throughput", lambda: [{**r, "mfu": mfu(r["tokens_per_second"], n) if "tokens_per_second" in r
                                        else None} for r in throughput(s, runner_filter)])
    with tempfile.TemporaryDirectory(prefix="bench-sweeps-") as tmp:
        if "sweep" in sections:
            section("sweep_overhead", lambda: sweep_overhead(
                Path(tmp), args.sweep_examples, args.sweep_fresh, args.sweep_trials_per_slot,
                tuple(int(c) for c in args.sweep_concurrency.split(","))))
        if "ttb" in sections:
            section("time_to_best", lambda: time_to_best(Path(tmp)))
        if "packed" in sections:
            section("packed", lambda: packed_sweeps(Path(tmp), args.pack_examples,
                                                    {a for a in args.pack_arms.split(",") if a}))
    if "scaling" in sections:
        section("scaling", lambda: scaling(s))
    print_table(result)
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
