"""The plan: what the sweep will do (trials, grid points, tokens per trial, resources, disk) and the
work done once for all trials before they start (model-based scores, sentence embeddings, the token
table every trial reads). Problems found while planning are raised as one ConfigError (exit 2).
"""

from __future__ import annotations

import sys
from typing import Any

from harness.config import ConfigError, SweepConfig
from harness.levels import combos, levels, searched
from harness.preflight import diversity_embeddings
from harness.space import grid_points


def needs_model(cfg: SweepConfig) -> bool:
    """Model-based selection (loss, IFD) or a loss-ordered curriculum: scores come from the base model."""
    from trainables.data.selection import needs_model as strategy_needs_model

    if cfg.eval.only:
        return False
    orders = [cfg.curriculum.model_copy(update={"order": c["curriculum.order"], "metric": c["curriculum.metric"]})
              for c in combos(cfg, ["curriculum.order", "curriculum.metric"])]
    return any(strategy_needs_model(s) for s in levels(cfg, "selection.strategy")) or any(c.needs_model for c in orders)


def score_once(cfg: SweepConfig, tokenizer: Any) -> Any:
    """The work every trial would repeat, done once before they start: model-based scores (when a searched
    level needs the base model) and sentence embeddings of the pool. Returns the base model, or None."""
    model = None
    if needs_model(cfg):
        from trainables.models import load_model

        print("scoring the pool with the base model once for all trials (cached)...")
        model = load_model(cfg.model.name, "none", cfg.model.trust_remote_code)[0]
        try:
            prescore(cfg, tokenizer, model)
        except ValueError as e:
            raise ConfigError([str(e)]) from None
    preembed(cfg)
    return model


def prescore(cfg: SweepConfig, tokenizer: Any, model: Any) -> int:
    """Model-based scores (loss, IFD) for every searched level that needs them, computed once here and
    cached on disk, so trials find them ready instead of each scoring the same examples (or waiting
    on each other's cache lock). Returns how many level combinations were scored."""
    from trainables.data.pipeline import prepare
    from trainables.data.selection import needs_model as strategy_needs_model
    from trainables.data.tokenize import encode

    def n_tokens(e: Any) -> int:
        return len(encode(tokenizer, e.messages, cfg.train.max_seq_len)[0])

    done = 0
    for c in combos(cfg, ["selection.strategy", "selection.n", "curriculum.order", "curriculum.metric", "train.seed"]):
        strategy, n, order, metric, seed = c.values()
        selection = cfg.selection.model_copy(update={"strategy": strategy, "n": n})
        curriculum = cfg.curriculum.model_copy(update={"order": order, "metric": metric})
        if strategy_needs_model(strategy) or curriculum.needs_model:
            prepare(cfg.data, selection, seed, n_tokens, curriculum=curriculum, model=model, tokenizer=tokenizer,
                    max_len=cfg.train.max_seq_len)
            done += 1
    return done


def preembed(cfg: SweepConfig) -> None:
    """Sentence embeddings of the pool for diversity, computed once here and cached on disk (~0.1 s per
    example on one core), so trials find them ready instead of each embedding the same pool."""
    from trainables.data.pipeline import split_pool
    from trainables.data.selection.diversity import embedding_label, resolve_embedding, sentence_embeddings

    pool = None
    for how, name in diversity_embeddings(cfg):
        kind, path = resolve_embedding(how, name)
        if kind == "sentence":
            pool = pool if pool is not None else split_pool(cfg.data)[0]
            print(f"embedding the pool with {embedding_label(how, name)} once for all trials (cached)...")
            sentence_embeddings([e.text for e in pool], path, progress=True)


def planned_points(s: Any) -> list[dict[str, Any]]:
    """The explicit trials of a grid (or of a space with grid entries only); [] for sampled searches."""
    return grid_points(s) if s.algorithm == "grid" or all(p.kind in ("grid", "tie") for p in s.space.values()) else []


def count_trials(s: Any) -> int:
    points = planned_points(s)
    return len(points) if points else s.num_samples * max(1, len(s.seeds) if s.algorithm == "random" else 1)


def plan(cfg: SweepConfig, tokens: Any, model: Any = None) -> dict[str, Any]:
    """What the sweep will do: trials, grid, resources, tokens per trial (base config). Encodes the
    base config's subset and the held-out set into `tokens` (trainables.data.tokenize.Tokens), the
    table every trial then reads instead of tokenizing them again."""
    from trainables.data.pipeline import prepare

    out = {
        "trials": count_trials(cfg.search), "grid": planned_points(cfg.search), "reports_per_trial": cfg.reports_per_trial,
        "resources": {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial,
                      "workers": cfg.resources.workers_per_trial},
        "concurrent": cfg.search.max_concurrent, "shortfalls": [],
        "disk_bytes": None,  # eval-only trials keep no checkpoints: nothing to estimate
    }
    if cfg.eval.only and not cfg.eval.scores_heldout:
        return out  # an evaluation: no training subset, no held-out rows of the pool to score

    def n_tokens(e: Any) -> int:
        return len(tokens(e, cfg.train.max_seq_len)[0])

    selection, curriculum, note = cfg.selection, cfg.curriculum, ""
    if model is None and needs_model(cfg):  # --dry-run: estimate tokens without scoring
        from trainables.data.selection import needs_model as strategy_needs_model

        if strategy_needs_model(selection.strategy):
            selection, note = selection.model_copy(update={"strategy": "random"}), " (estimated with random)"
        curriculum = None
    try:
        prep = prepare(cfg.data, selection, cfg.train.seed, n_tokens, curriculum=curriculum, model=model,
                       tokenizer=tokens.tokenizer, max_len=cfg.train.max_seq_len)
        shortfalls = [] if cfg.eval.only else arm_shortfalls(cfg, tokens, model)
    except ValueError as e:
        raise ConfigError([str(e)]) from None
    problems = length_problems(cfg, tokens, prep.train, prep.eval)
    if problems:
        raise ConfigError(problems)
    pool_warnings(cfg, int(prep.stats["pool_size"]))
    per_epoch = prep.stats["train_tokens"]
    steps = -(-int(prep.stats["n_examples"]) // (cfg.train.batch_size * cfg.train.grad_accum))
    return {**out, "examples": f"{prep.stats['n_examples']}{note}", "tokens_per_epoch": per_epoch,
            "tokens_per_trial": per_epoch * cfg.train.epochs, "steps_per_epoch": steps, "shortfalls": shortfalls,
            "disk_bytes": disk_estimate(cfg, tokens.tokenizer.name_or_path)}


def length_problems(cfg: SweepConfig, tokens: Any, train: list, held_out: list) -> list[str]:
    """train.max_seq_len must leave room for the responses: a prompt that fills it is all the model sees
    and no token is learnt (or scored). Fails when most examples lose their whole response at the
    shortest searched max_seq_len; warns when some do."""
    import statistics

    from trainables.data.tokenize import IGNORE

    max_len = min(levels(cfg, "train.max_seq_len"))

    def prompt_len(e: Any) -> int:
        labels = tokens(e)[1]
        return next((i for i, y in enumerate(labels) if y != IGNORE), len(labels))

    problems = []
    for what, examples in (("selected training examples", train), ("held-out examples", held_out)):
        lengths = [prompt_len(e) for e in examples]
        lost = [n for n in lengths if n + 1 >= max_len]  # the first response token must fit too
        if not lost:
            continue
        line = (f"train.max_seq_len: {max_len} leaves no room for the response of {len(lost)} of {len(lengths)} "
                f"{what} (prompts are {min(lengths)}-{max(lengths)} tokens, median "
                f"{statistics.median(lengths):g})")

        def room_for(prompt: int) -> int:  # the prompt and 64 response tokens, rounded up to 64, above max_len
            return max(-(-(prompt + 64) // 64) * 64, -(-(max_len + 1) // 64) * 64)

        if 2 * len(lost) > len(lengths):
            problems.append(f"{line}; raise it to at least {room_for(sorted(lengths)[int(0.9 * (len(lengths) - 1))])}")
        else:
            print(f"warning: {line}; those examples are skipped (raise it to {room_for(max(lost))} to keep them)",
                  file=sys.stderr)
    return problems


def pool_warnings(cfg: SweepConfig, pool_size: int) -> None:
    """selection.n above the pool: every such trial trains on the whole pool, so the levels above it are
    the same trial; say so in the plan rather than let a sweep compare identical subsets."""
    if cfg.selection.token_budget is not None:
        return
    over = sorted({n for n in levels(cfg, "selection.n") if n is not None and n > pool_size})
    if over:
        print(f"warning: selection.n: {', '.join(map(str, over))} is more than the {pool_size} examples the pool "
              f"holds after the held-out split and hygiene; such trials train on all {pool_size} (lower selection.n "
              "or give a larger data.train)", file=sys.stderr)


def selection_arms(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every combination of the searched selection.* levels (grid / choice entries); [] when none is searched."""
    paths = searched(cfg, "selection.")
    return combos(cfg, paths) if paths else []


def arm_shortfalls(cfg: SweepConfig, tokens: Any, model: Any) -> list[str]:
    """A trial drops the selected examples whose prompt fills train.max_seq_len (no response token left to
    learn), so an arm of a searched selection can train on fewer examples than asked: a confound against
    the other arms. One line per such arm, from its subset under the base seed at the shortest searched
    max_seq_len (the trials' table is left as planned: a scratch copy encodes the arms' examples)."""
    from trainables.data.pipeline import prepare
    from trainables.data.selection import needs_model as strategy_needs_model
    from trainables.data.tokenize import IGNORE, Tokens

    scratch, max_len = Tokens(tokens.tokenizer, tokens.table), min(levels(cfg, "train.max_seq_len"))
    lines = []
    for arm in selection_arms(cfg):
        selection = cfg.selection.model_copy(update={k.removeprefix("selection."): v for k, v in arm.items()})
        if model is None and strategy_needs_model(selection.strategy):
            continue  # --dry-run: no base model to rank with
        chosen = prepare(cfg.data, selection, cfg.train.seed, lambda e: len(scratch(e, cfg.train.max_seq_len)[0]),
                         model=model, tokenizer=tokens.tokenizer, max_len=cfg.train.max_seq_len, progress=False).train
        dropped = sum(not any(y != IGNORE for y in scratch(e, max_len)[1][1:]) for e in chosen)
        if dropped:
            asked = (f"selection.token_budget {selection.token_budget}" if selection.token_budget
                     else f"selection.n {selection.n}")
            lines.append(f"selection arm {', '.join(f'{k}={v}' for k, v in arm.items())}: {dropped} of its "
                         f"{len(chosen)} examples have prompts that fill train.max_seq_len {max_len} and are dropped, "
                         f"so it trains on {len(chosen) - dropped} ({asked} asked), a confound against the other "
                         "arms; raise train.max_seq_len")
    return lines


def disk_estimate(cfg: SweepConfig, model_path: str) -> int | None:
    """Bytes the sweep fills in its storage (checkpoints, adapters: harness/diskfull.py), at its largest rank."""
    from harness.diskfull import estimate

    entry = cfg.search.space.get("lora.r")
    ranks = [r for r in levels(cfg, "lora.r") if isinstance(r, int)] + (list(entry.int) if entry and entry.int else [])
    return estimate(cfg, model_path, count_trials(cfg.search), max(ranks or [cfg.lora.r]))


def print_plan(cfg: SweepConfig, p: dict[str, Any]) -> None:
    print(f"sweep {cfg.name}: {p['trials']} trials, {cfg.search.algorithm} search, {cfg.scheduler.type} scheduler, "
          f"metric {cfg.search.metric} ({cfg.search.mode})")
    print(f"  model {cfg.model.name} (quantization {cfg.model.quantization}); data {cfg.data.train}")
    if cfg.eval.only:
        adapter = cfg.eval.adapter or "none (the base model)"
        held = "held-out eval_loss included" if cfg.eval.scores_heldout else "no held-out eval_loss (eval.heldout)"
        print(f"  eval-only trials (no training): adapter {adapter}; in-context shots {cfg.eval.icl_shots}; "
              f"{len(cfg.eval.metrics())} metrics, {held}")
    else:
        print(f"  per trial: {p['examples']} examples, {p['tokens_per_epoch']} tokens/epoch x {cfg.train.epochs} "
              f"epochs = {p['tokens_per_trial']} tokens, {p['steps_per_epoch']} steps/epoch, {p['reports_per_trial']} reports")
    where = cfg.storage if cfg.storage == str(cfg.run_dir) else f"{cfg.storage} (local copy {cfg.run_dir})"
    print(f"  resources per trial {p['resources']}, up to {p['concurrent']} at once on {cfg.ray_address} Ray; "
          f"output {where}")
    if cfg.resources.pack > 1:
        print(f"  packed: up to {cfg.resources.pack} trials with the same base model share one worker holding these "
              "resources (resources.pack)")
    print_disk(cfg, p.get("disk_bytes"))
    print(f"  a failing trial is retried {cfg.recovery.max_failures} time(s) from its last checkpoint; "
          f"{cfg.recovery.keep_checkpoints} best checkpoint(s) + the latest kept per trial")
    for how, name in dict.fromkeys(diversity_embeddings(cfg)):
        from trainables.data.selection.diversity import embedding_label

        print(f"  diversity (embedding: {how}) embeds with {embedding_label(how, name)}")
    for i, point in enumerate(p["grid"]):
        print(f"  trial {i + 1}: " + ", ".join(f"{k}={v}" for k, v in point.items()))
    for line in p["shortfalls"]:
        print(f"warning: {line}", file=sys.stderr)


def print_disk(cfg: SweepConfig, need: int | None) -> None:
    """The disk the sweep will fill, and a warning when its filesystem has less free (a URI: not checked)."""
    from harness.diskfull import EXIT_DISK_FULL, free_bytes, mb

    if need is None or "://" in cfg.output.dir:
        return
    free, _, measured = free_bytes(cfg.run_dir)
    print(f"  disk: up to about {mb(need)} of checkpoints and adapters in {cfg.run_dir} (an ended trial keeps its "
          f"adapter, not its optimizer state); {mb(free)} free there")
    if free < need:
        print(f"warning: output.dir: the sweep needs about {mb(need)} but {measured} has {mb(free)} free; it will "
              f"stop (exit {EXIT_DISK_FULL}, resumable) when the disk fills", file=sys.stderr)
