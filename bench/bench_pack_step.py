"""Per-step time and peak memory of a packed step (trainables/pack) against the same members trained alone.

    python bench/bench_pack_step.py [--ks 3 4] [--steps 4] [--threads 1]

Each measurement runs in its own process (peak RSS is per process): one process per member trained alone
(peft + train_step, the single-trial path) and one per pack of k members (PackedLora + packed_train_step).
Members are the lora_rank sweep's (r 4, 8, 16, 32 with alpha 2r, all-linear, dropout 0.05, lr 5e-4),
batch 4, max_seq_len 256, packed sequences, fp32 on the CPU, each on its own examples of
alpaca/random_9k.json. The first step warms up; the mean of the others is the per-step time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RANKS = [4, 8, 16, 32]
BATCH, SEQ = 4, 256


def _batches(tok, member: int, steps: int) -> list:
    from trainables.batching import pack
    from trainables.data.formats import load_examples
    from trainables.data.tokenize import encode

    first = member * BATCH * steps
    examples = load_examples("alpaca/random_9k.json")[first : first + BATCH * steps]
    rows = [encode(tok, e.messages, SEQ) for e in examples]
    return [pack(rows[i : i + BATCH]) for i in range(0, len(rows), BATCH)]


def worker(mode: str, members: list[int], steps: int, threads: int) -> dict:
    """Train `members` (indices into RANKS) alone (one member) or as one pack; time the steps."""
    import resource

    import torch
    from transformers import get_scheduler

    from trainables.models import load_model
    from trainables.training import train_step

    torch.set_num_threads(threads)
    model, tok, _ = load_model("smollm2-135m-instruct")
    data = {str(m): _batches(tok, m, steps) for m in members}
    no_autocast, times = contextlib.nullcontext, []
    if mode == "alone":
        from peft import LoraConfig, get_peft_model

        m, r = str(members[0]), RANKS[members[0]]
        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.05, target_modules="all-linear",
                                                 task_type="CAUSAL_LM")).train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=5e-4)
        sched = get_scheduler("cosine", opt, 0, steps)
        for b in data[m]:
            t0 = time.perf_counter()
            float(train_step(model, [b], no_autocast, opt, sched, params, 1.0))
            times.append(time.perf_counter() - t0)
    else:
        from trainables.pack import MemberSpec, PackedLora, packed_train_step

        lora = PackedLora(model.train(), "all-linear")
        opts, scheds = {}, {}
        for i in members:
            m, r = str(i), RANKS[i]
            lora.add(MemberSpec(m, r, 2.0 * r, 0.05, False, ("all-linear",), 0))
            opts[m] = torch.optim.AdamW(lora.parameters_of(m), lr=5e-4)
            scheds[m] = get_scheduler("cosine", opts[m], 0, steps)
        for s in range(steps):
            step = {m: [data[m][s]] for m in opts}
            t0 = time.perf_counter()
            out = packed_train_step(lora, model, step, no_autocast, opts, scheds, 1.0,
                                    {m: b[0].n_labels for m, b in step.items()})
            [float(v) for v in out.values()]
            times.append(time.perf_counter() - t0)
    measured = times[1:] or times
    return {"mode": mode, "members": members, "step_seconds": sum(measured) / len(measured),
            "tokens_per_step": sum(b.n_tokens for batches in data.values() for b in batches) / steps,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def spawn(mode: str, members: list[int], args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--members", *map(str, members), "--steps", str(args.steps),
           "--threads", str(args.threads)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", type=int, nargs="+", default=[3, 4])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", choices=["alone", "pack"])
    ap.add_argument("--members", type=int, nargs="+")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.members, args.steps, args.threads)))
        return
    alone = [spawn("alone", [m], args) for m in range(max(args.ks))]
    print("\n| k | pack s/step | sum of k alone s/step | ratio | pack peak RSS MB | one trial peak RSS MB | k trials |")
    print("|---|---|---|---|---|---|---|")
    packs = [(k, spawn("pack", list(range(k)), args)) for k in args.ks]
    for k, p in packs:
        solo = sum(a["step_seconds"] for a in alone[:k])
        rss = max(a["peak_rss_mb"] for a in alone[:k])
        print(f"| {k} | {p['step_seconds']:.2f} | {solo:.2f} | {p['step_seconds'] / solo:.2f} | "
              f"{p['peak_rss_mb']:.0f} | {rss:.0f} | {sum(a['peak_rss_mb'] for a in alone[:k]):.0f} |")


if __name__ == "__main__":
    main()
