"""Selection cost on a large pool: seconds per strategy, and the tokens of each N=100 subset.

    python bench/bench_selection.py [--copies 5] [--n 100] [--max-len 256] [--model-sample 0] [--embed-sample 2000]

The pool is the real Alpaca files (random_9k + the two scored 1k subsets) repeated --copies times
(ids made unique), ~56k examples: the largest pool a sweep here would select from, x3. Diversity runs
there on TF-IDF. Model-based strategies (loss, ifd) score every candidate with the base model, so they
run on --model-sample examples only (0 = skip), with a throw-away cache; so does diversity on sentence
embeddings (all-MiniLM-L6-v2, ~0.1 s/example on one core) on --embed-sample examples: cold (embedding
included) and warm (from the embedding cache, as trials after the driver's pre-embedding find it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainables.data.formats import load_examples  # noqa: E402
from trainables.data.hygiene import decontaminate, dedup  # noqa: E402
from trainables.data.selection import SELECTION, needs_model, select  # noqa: E402
from trainables.data.tokenize import encode  # noqa: E402
from trainables.schema.data import SelectionConfig  # noqa: E402

FILES = ("alpaca/random_9k.json", "alpaca/filtered_alpaca_1k_score.json", "alpaca/filtered_alpaca_1k_longest.json")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=5)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--max-len", type=int, default=256)
    ap.add_argument("--model-sample", type=int, default=0, help="pool size for loss/ifd (0 = skip them)")
    ap.add_argument("--embed-sample", type=int, default=2000,
                    help="pool size for diversity on sentence embeddings (0 = skip)")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    from trainables.models import load_model

    model, tok, _ = load_model("smollm2-135m-instruct")

    def n_tokens(e) -> int:
        return len(encode(tok, e.messages, args.max_len)[0])

    base, pool, distinct = pools(args.copies)
    rows = rule_based(args, pool, distinct, n_tokens)
    if args.embed_sample:
        rows += sentence_diversity(args, base, n_tokens)
    if args.model_sample:
        rows += model_based(args, base, model, tok)
    print_rows(rows, n_tokens)


def pools(copies: int) -> tuple[list, list, list]:
    """(the files' examples, them replicated `copies` times, the distinct pool after dedup + decontamination)."""
    t = time.perf_counter()
    base = [e for f in FILES for e in load_examples(f)]
    pool = [replace(e, id=f"{e.id}~{c}", meta={}) for c in range(copies) for e in base]
    print(f"pool: {len(pool)} examples ({len(base)} x {copies}), loaded in {time.perf_counter() - t:.1f}s")
    distinct = pool
    for name, step in (("dedup normalized", lambda p: dedup(p, "normalized")),
                       ("decontaminate 13-gram", lambda p: decontaminate(
                           p, ["eval/test_set_evol_instruct_150.json"], 13))):
        t = time.perf_counter()
        kept, removed = step(pool)
        print(f"{name}: {time.perf_counter() - t:.2f}s, removed " +
              ", ".join(f"{k} {len(v)}" for k, v in removed.items()))
        distinct = step(distinct)[0]
    # Times are taken on the replicated pool; the subsets' token counts on the distinct examples (the
    # replicated pool holds every example 5 times, so "the 100 longest" would be 20 examples x 5).
    print(f"distinct pool after dedup + decontamination: {len(distinct)} examples")
    return base, pool, distinct


def rule_based(args: argparse.Namespace, pool: list, distinct: list, n_tokens) -> list[tuple]:
    """Every strategy that needs no model, timed on the replicated pool, its subset from the distinct one."""
    rows = []
    # embedding tfidf: sentence embeddings of the whole ~56k pool would take ~1.5 h on one core (below: a sample)
    configs = [(s + (" (tfidf)" if s == "diversity" else ""), SelectionConfig(strategy=s, n=args.n, embedding="tfidf"))
               for s in SELECTION.names() if not needs_model(s)]
    configs.append(("longest (conversation)", SelectionConfig(strategy="longest", n=args.n, length_by="conversation")))
    configs.append(("weighted (rank)", SelectionConfig(strategy="weighted", n=args.n, normalize="rank")))
    configs.append(("longest, token_budget 12000", SelectionConfig(strategy="longest", token_budget=12000)))
    for label, cfg in configs:
        t = time.perf_counter()
        select(pool, cfg, 0, n_tokens)
        rows.append((label, len(pool), time.perf_counter() - t, select(distinct, cfg, 0, n_tokens)))
    return rows


def sentence_diversity(args: argparse.Namespace, base: list, n_tokens) -> list[tuple]:
    """Diversity on sentence embeddings of a sample, with an empty embedding cache, then a warm one."""
    from trainables.data.selection.diversity import embedding_label

    rows = []
    sample = base[: args.embed_sample]
    cfg = SelectionConfig(strategy="diversity", n=args.n, embedding="sentence")
    os.environ["HARNESS_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-embeddings-")
    for when in ("cold", "warm"):
        t = time.perf_counter()
        chosen = select(sample, cfg, 0, n_tokens)
        rows.append((f"diversity (sentence, {when})", len(sample), time.perf_counter() - t, chosen))
    print(f"sentence embeddings: {embedding_label('sentence', cfg.embedding_model)}")
    return rows


def model_based(args: argparse.Namespace, base: list, model, tok) -> list[tuple]:
    """loss and IFD on a sample: the base model's scoring once, then each selection (times include the scoring)."""
    from trainables.data.difficulty import attach_scores

    rows = []
    sample = [replace(e, meta={}) for e in base[: args.model_sample]]
    os.environ["HARNESS_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench-difficulty-")
    t = time.perf_counter()
    attach_scores(sample, model, tok, max_len=args.max_len, batch_size=8, model_name="bench")
    scoring = time.perf_counter() - t
    print(f"model scoring: {scoring:.1f}s for {len(sample)} examples ({scoring / len(sample):.2f} s/example)")
    for s in ("loss", "ifd"):
        t = time.perf_counter()
        chosen = select(sample, SelectionConfig(strategy=s, n=args.n), 0)
        rows.append((s, len(sample), scoring + time.perf_counter() - t, chosen))
    return rows


def print_rows(rows: list[tuple], n_tokens) -> None:
    print("\nseconds: on the pool column's examples; n / tokens / tok/ex / resp words: the subset chosen from the "
          "distinct pool (sample pools: from the sample)")
    print(f"\n{'strategy':<28}{'pool':>8}{'seconds':>9}{'n':>6}{'tokens':>9}{'tok/ex':>8}{'resp words':>12}")
    for label, size, secs, chosen in rows:
        toks = [n_tokens(e) for e in chosen]
        words = statistics.fmean(len(e.response_text.split()) for e in chosen) if chosen else 0
        print(f"{label:<28}{size:>8}{secs:>9.2f}{len(chosen):>6}{sum(toks):>9}"
              f"{statistics.fmean(toks) if toks else 0:>8.0f}{words:>12.0f}")

if __name__ == "__main__":
    main()
