"""python -m harness.sweep FILE [--dry-run] [--resume] [--address A] [key=value ...]

Validate everything, check that model and data exist, then hand the sweep to Ray Tune:
Tuner(trainable, param_space, TuneConfig(search_alg, scheduler), RunConfig(storage, callbacks)).
Bad input ends with one line per problem and exit code 2, before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from harness.config import ConfigError, SweepConfig, load_sweep
from harness.space import grid_points, param_space
from harness.storage import Storage

EXIT_CONFIG = 2
# Written into sweep.yaml beside the config. metric_directions: every metric the sweep produces -> min / max
# (None: a count or diagnostic), as the training loop and the evaluators declare them; the analysis reads it.
META_KEYS = ("command", "git_commit", "hardware", "metric_directions")


def run_metadata(argv: list[str]) -> dict[str, str]:
    """How this sweep was launched: the exact command, the code version, the machine."""
    import platform
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                                cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        gpu = "unknown"
    return {
        "command": "python -m harness.sweep " + " ".join(shlex.quote(a) for a in argv),
        "git_commit": commit or "unknown",
        "hardware": f"{platform.machine()}, {os.cpu_count()} CPUs, {gpu}; {platform.platform()}",
    }


def fail(problems: list[str]) -> None:
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    raise SystemExit(EXIT_CONFIG)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m harness.sweep", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_file", help="YAML sweep file, e.g. sweeps/lora_rank.yaml")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=3 lora.r=16")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and start nothing")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted sweep in its output dir")
    ap.add_argument("--retry-errored", action="store_true",
                    help="with --resume: run failed trials again from their last checkpoint")
    ap.add_argument("--address", help="Ray cluster to join ('auto', 'host:6379', 'ray://host:10001'); "
                                      "default: ray.address, else RAY_ADDRESS, else a private local instance")
    ap.add_argument("--no-report", action="store_true", help="skip the analysis report at the end")
    ap.add_argument("--dashboard", type=int, metavar="PORT", help="serve optuna-dashboard on 127.0.0.1:PORT "
                    "(default 8080) while the sweep runs (harness/dashboard.py)")
    from harness.dashboard import argv_with_port

    return ap.parse_intermixed_args(argv_with_port(sys.argv[1:] if argv is None else argv))  # overrides may follow flags


# ----------------------------------------------------------------------------- before Ray


def existence_problems(data: Any, model_name: str) -> tuple[list[str], str | None]:
    """Data files and the model must exist. Returns (problems, resolved model path)."""
    from trainables.data.pipeline import data_problems
    from trainables.models import ModelNotFound, resolve_model

    problems = data_problems(data)
    try:
        return problems, resolve_model(model_name)  # converts and caches the embedded model once
    except ModelNotFound as e:
        return problems + [str(e)], None


def section_problems(raw: dict | None) -> list[str]:
    """The checks of the machine (data files, model, GPUs, judge key) for a sweep that failed validation,
    on whichever of its sections are valid by themselves: all problems are reported in one run."""
    from pydantic import BaseModel, ValidationError

    from harness.config import (
        EvalConfig,
        ModelConfig,
        RayConfig,
        ResourcesConfig,
        WandbConfig,
        judge_key_problems,
        resource_problems,
        wandb_key_problems,
    )
    from trainables.data.config import DataConfig

    if not isinstance(raw, dict):
        return []

    def section(name: str, model: type[BaseModel]) -> Any:
        try:
            return model.model_validate(raw.get(name) or {})
        except ValidationError:
            return None

    data, model, evals = section("data", DataConfig), section("model", ModelConfig), section("eval", EvalConfig)
    resources, ray = section("resources", ResourcesConfig), section("ray", RayConfig)
    wandb = section("wandb", WandbConfig)
    problems = existence_problems(data, model.name)[0] if data and model else []
    address = (ray.address if ray else None) or os.environ.get("RAY_ADDRESS") or "local"
    problems += resource_problems(resources, address) if resources else []
    space = (raw.get("search") or {}).get("space") if isinstance(raw.get("search"), dict) else None
    searched = isinstance(space, dict) and "eval.judge.enabled" in space
    problems += wandb_key_problems(wandb) if wandb else []
    return problems + (judge_key_problems(evals, searched) if evals else [])


def preflight(cfg: SweepConfig) -> Any:
    """Model and data must exist before anything starts. Returns the tokenizer (for the plan)."""
    from transformers import AutoTokenizer

    problems, model_path = existence_problems(cfg.data, cfg.model.name)
    problems += embedding_problems(cfg) + output_problems(cfg) + eval_input_problems(cfg)
    if problems:
        fail(problems)
    try:
        return AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    except OSError as e:
        fail([f"model.name: cannot load {cfg.model.name!r} ({str(e).splitlines()[0]}); "
              "check the id, the network, or use a local directory"])


def eval_input_problems(cfg: SweepConfig) -> list[str]:
    """Evaluation inputs that cannot be scored as configured (MCQ sets, perplexity files, generation
    prompts, judge prompts and references), at the base settings and at every searched level of an eval
    setting that changes what is read."""
    from harness.config import SweepConfig
    from harness.space import resolve
    from trainables.evaluate import input_problems

    base = cfg.model_dump(mode="json")
    variants = [cfg.eval]
    for path, p in cfg.search.space.items():
        if path.startswith(("eval.mcq", "eval.perplexity", "eval.icl_shots", "eval.generate", "eval.judge")) \
                and p.kind in ("grid", "choice"):
            variants += [SweepConfig.model_validate(resolve(base, {path: v}, {})).eval for v in p.grid or p.choice]
    return input_problems(*variants)


def output_problems(cfg: SweepConfig) -> list[str]:
    """The run directory must be a directory this process can create and write (checked by --dry-run too)."""
    field = "output.mirror" if "://" in cfg.output.dir else "output.dir"
    there = cfg.run_dir
    while not there.exists() and there != there.parent:
        there = there.parent  # the nearest part that exists: where the sweep's directories will be made
    if not there.is_dir():
        return [f"{field}: {there} is a file, not a directory; give a directory for the sweeps (e.g. {field}=runs)"]
    if not os.access(there, os.W_OK | os.X_OK):
        return [f"{field}: {there} is not writable (a read-only filesystem or no permission); give a directory "
                f"you can write (e.g. {field}=runs)"]
    return []


def diversity_embeddings(cfg: SweepConfig) -> list[tuple[str, str]]:
    """(selection.embedding, embedding_model) of every searched diversity level; [] without diversity."""
    if cfg.eval.only or "diversity" not in _levels(cfg, "selection.strategy"):
        return []
    return [(how, name) for how in _levels(cfg, "selection.embedding") for name in _levels(cfg, "selection.embedding_model")]


def embedding_problems(cfg: SweepConfig) -> list[str]:
    """selection.embedding: sentence needs its model on this machine (trials load it without network)."""
    from trainables.data.selection.diversity import resolve_embedding

    problems = []
    for how, name in diversity_embeddings(cfg):
        try:
            resolve_embedding(how, name)
        except ValueError as e:
            problems.append(str(e))
    return list(dict.fromkeys(problems))


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


def needs_model(cfg: SweepConfig) -> bool:
    """Model-based selection (loss, IFD) or a loss-ordered curriculum: scores come from the base model."""
    from trainables.data.selection import needs_model as strategy_needs_model

    if cfg.eval.only:
        return False
    strategies = {cfg.selection.strategy}
    if "selection.strategy" in cfg.search.space:
        p = cfg.search.space["selection.strategy"]
        strategies |= set(p.grid or p.choice or [])
    orders = [cfg.curriculum.model_copy(update={"order": o, "metric": m})
              for o in _levels(cfg, "curriculum.order") for m in _levels(cfg, "curriculum.metric")]
    return any(strategy_needs_model(s) for s in strategies) or any(c.needs_model for c in orders)


def _levels(cfg: SweepConfig, path: str) -> list[Any]:
    from harness.config import get_dotted

    p = cfg.search.space.get(path)
    return list(p.grid or p.choice or []) if p is not None else [get_dotted(cfg, path)]


def planned_points(s: Any) -> list[dict[str, Any]]:
    """The explicit trials of a grid (or of a space with grid entries only); [] for sampled searches."""
    return grid_points(s) if s.algorithm == "grid" or all(p.kind in ("grid", "tie") for p in s.space.values()) else []


def count_trials(s: Any) -> int:
    points = planned_points(s)
    return len(points) if points else s.num_samples * max(1, len(s.seeds) if s.algorithm == "random" else 1)


def length_problems(cfg: SweepConfig, tokens: Any, train: list, held_out: list) -> list[str]:
    """train.max_seq_len must leave room for the responses: a prompt that fills it is all the model sees
    and no token is learnt (or scored). Fails when most examples lose their whole response at the
    shortest searched max_seq_len; warns when some do."""
    import statistics

    from trainables.data.tokenize import IGNORE

    max_len = min(_levels(cfg, "train.max_seq_len"))

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
    over = sorted({n for n in _levels(cfg, "selection.n") if n is not None and n > pool_size})
    if over:
        print(f"warning: selection.n: {', '.join(map(str, over))} is more than the {pool_size} examples the pool "
              f"holds after the held-out split and hygiene; such trials train on all {pool_size} (lower selection.n "
              "or give a larger data.train)", file=sys.stderr)


def prescore(cfg: SweepConfig, tokenizer: Any, model: Any) -> int:
    """Model-based scores (loss, IFD) for every searched level that needs them, computed once here and
    cached on disk, so trials find them ready instead of each scoring the same examples (or waiting
    on each other's cache lock). Returns how many level combinations were scored."""
    import itertools

    from trainables.data.pipeline import prepare
    from trainables.data.selection import needs_model as strategy_needs_model
    from trainables.data.tokenize import encode

    def n_tokens(e: Any) -> int:
        return len(encode(tokenizer, e.messages, cfg.train.max_seq_len)[0])

    axes = ["selection.strategy", "selection.n", "curriculum.order", "curriculum.metric"]
    seeds = _levels(cfg, "train.seed") if "train.seed" in cfg.search.space else list(cfg.search.seeds)
    done = 0
    for combo in itertools.product(*[_levels(cfg, a) for a in axes], seeds):
        strategy, n, order, metric, seed = combo
        selection = cfg.selection.model_copy(update={"strategy": strategy, "n": n})
        curriculum = cfg.curriculum.model_copy(update={"order": order, "metric": metric})
        if strategy_needs_model(strategy) or curriculum.needs_model:
            prepare(cfg.data, selection, seed, n_tokens, curriculum=curriculum, model=model, tokenizer=tokenizer,
                    max_len=cfg.train.max_seq_len)
            done += 1
    return done


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
        fail([str(e)])
    problems = length_problems(cfg, tokens, prep.train, prep.eval)
    if problems:
        fail(problems)
    pool_warnings(cfg, int(prep.stats["pool_size"]))
    per_epoch = prep.stats["train_tokens"]
    steps = -(-int(prep.stats["n_examples"]) // (cfg.train.batch_size * cfg.train.grad_accum))
    return {**out, "examples": f"{prep.stats['n_examples']}{note}", "tokens_per_epoch": per_epoch,
            "tokens_per_trial": per_epoch * cfg.train.epochs, "steps_per_epoch": steps, "shortfalls": shortfalls,
            "disk_bytes": disk_estimate(cfg, tokens.tokenizer.name_or_path)}


def selection_arms(cfg: SweepConfig) -> list[dict[str, Any]]:
    """Every combination of the searched selection.* levels (grid / choice entries); [] when none is searched."""
    import itertools

    paths = [p for p, q in cfg.search.space.items() if p.startswith("selection.") and q.kind in ("grid", "choice")]
    return [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*[_levels(cfg, p) for p in paths])
            ] if paths else []


def arm_shortfalls(cfg: SweepConfig, tokens: Any, model: Any) -> list[str]:
    """A trial drops the selected examples whose prompt fills train.max_seq_len (no response token left to
    learn), so an arm of a searched selection can train on fewer examples than asked: a confound against
    the other arms. One line per such arm, from its subset under the base seed at the shortest searched
    max_seq_len (the trials' table is left as planned: a scratch copy encodes the arms' examples)."""
    from trainables.data.pipeline import prepare
    from trainables.data.selection import needs_model as strategy_needs_model
    from trainables.data.tokenize import IGNORE, Tokens

    scratch, max_len = Tokens(tokens.tokenizer, tokens.table), min(_levels(cfg, "train.max_seq_len"))
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
    ranks = [r for r in _levels(cfg, "lora.r") if isinstance(r, int)] + (list(entry.int) if entry and entry.int else [])
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
    print(f"  disk: up to about {mb(need)} of checkpoints and adapters in {cfg.run_dir}; {mb(free)} free there")
    if free < need:
        print(f"warning: output.dir: the sweep needs about {mb(need)} but {measured} has {mb(free)} free; it will "
              f"stop (exit {EXIT_DISK_FULL}, resumable) when the disk fills", file=sys.stderr)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}": v})
    return out


def run_state(store: Storage) -> tuple[int, int]:
    """(trials finished, trials recorded) in an earlier run's results.csv."""
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(store.read_text("results.csv") or "")))
    return sum(r.get("status") in ("TERMINATED", "EARLY_STOPPED", "ERROR") for r in rows), len(rows)


def open_storage(cfg: SweepConfig) -> Storage:
    """The sweep's storage, with run_dir as the local copy of a URI; an unreachable URI is a config error."""
    try:
        return Storage(cfg.storage, mirror=cfg.run_dir)
    except (OSError, ValueError) as e:  # pyarrow: unknown scheme, no credentials, no network
        fail([f"output.dir: cannot open {cfg.storage} ({str(e).splitlines()[0]}); check the URI, the "
              "credentials (e.g. AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS) and the network"])


def hold_run_dir(cfg: SweepConfig) -> None:
    """This driver owns cfg.run_dir until it exits (harness/lock.py); another live driver there: exit 2."""
    from harness.lock import RunDirBusy, hold

    try:
        hold(cfg.run_dir)
    except RunDirBusy as e:
        fail([str(e)])


def secret_path_problems(cfg: SweepConfig) -> list[str]:
    """A key in name, output.dir or output.mirror would name directories, which Ray's saved state and
    every path in every file record: refuse it (values are masked: trainables/secrets.py)."""
    from trainables.secrets import redact

    fields = {"name": cfg.name, "output.dir": cfg.output.dir, "output.mirror": cfg.output.mirror}
    return [f"{field}: {redact(value)!r} holds the value of a secret environment variable; give credentials "
            "through the environment (e.g. AWS_SECRET_ACCESS_KEY), never in a path"
            for field, value in fields.items() if redact(value) != value]


def _what_it_computes(doc: dict) -> dict:
    """A sweep config minus where it runs: resuming on another machine or cluster is the same sweep."""
    doc = {k: v for k, v in doc.items() if k not in (*META_KEYS, "ray")}
    doc["output"] = {k: v for k, v in (doc.get("output") or {}).items() if k != "mirror"}
    return doc


def check_run_dir(cfg: SweepConfig, resume: bool, n_trials: int, store: Storage) -> bool:
    """Refuse to mix two different sweeps in one place; offer to resume an unfinished run of this
    one (asked on a terminal, else named in the error). Returns whether to resume."""
    saved = store.read_text("sweep.yaml")
    where = cfg.storage
    if saved is None:
        if resume:
            fail([f"--resume: {where} holds no sweep to resume; run without --resume"])
        if store.remote and (cfg.run_dir / "sweep.yaml").exists():
            fail([f"output.mirror: {cfg.run_dir} holds files of a sweep that {where} does not; "
                  "delete that directory or set another output.mirror"])
        return False
    from trainables.secrets import redact_obj

    old = _what_it_computes(yaml.safe_load(saved) or {})
    new = _what_it_computes(redact_obj(cfg.model_dump(mode="json")))  # sweep.yaml holds it masked
    if old != new:
        a, b = _flat(old), _flat(new)
        keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
        fail([f"output.dir: {where} holds a different sweep (it differs in {shown}); pick another "
              "name= or output.dir=, or delete that directory"
              + ("; --resume needs the sweep file and overrides of the run it continues" if resume else "")])
    if resume:
        return True
    done, recorded = run_state(store)
    if done >= max(n_trials, recorded) > 0:
        fail([f"output.dir: {where} already holds a finished run of this sweep ({done} trials); pick "
              "another name= or output.dir= to run it again"])
    if sys.stdin.isatty():
        answer = input(f"{where} holds an unfinished run of this sweep ({done} of {n_trials} trials "
                       "finished). Resume it? [Y/n] ")
        if answer.strip().lower() in ("", "y", "yes"):
            return True
    fail([f"output.dir: {where} holds an unfinished run of this sweep ({done} of {n_trials} trials "
          "finished); add --resume to continue it, or pick another name= to start afresh"])
    return False


# ----------------------------------------------------------------------------- Ray Tune


# A data-parallel trial's own process only drives its Ray Train workers (which reserve the CPUs and
# GPUs); Ray needs some resource in its request, so it asks for a little memory instead of a CPU.
DRIVER_MEMORY = 256 * 2**20


def trial_resources(base: dict[str, Any]) -> Any:
    """Resources of each trial, from its own config (resources.* may be searched)."""
    from ray import tune

    from harness.space import resolve

    space = SweepConfig.model_validate(base).search.space

    def request(params: dict[str, Any]) -> Any:
        r = SweepConfig.model_validate(resolve(base, params, space)).resources
        bundle = ({"CPU": 0, "memory": DRIVER_MEMORY} if r.workers_per_trial > 1
                  else {"CPU": r.cpus_per_trial, "GPU": r.gpus_per_trial})
        return tune.PlacementGroupFactory([bundle])

    return request


def build_tuner(cfg: SweepConfig, base: dict[str, Any], resume: bool, store: Storage,
                tokens: dict[str, Any], retry_errored: bool = False) -> Any:
    """`tokens`: the plan's encodings (trainables.data.tokenize.Tokens.table), put into Ray's object
    store once by tune.with_parameters and read by every training trial."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    from harness.config import SearchConfig
    from harness.results import ResultsWriter
    from trainables.evaluate.eval_only import eval_trial
    from trainables.qlora import train_trial
    from trainables.secrets import redact, redact_obj

    # Ray pickles what it is given (tuner.pkl, trial names and dirs, its logs) and W&B records it: both get
    # the config with secret values masked as ${NAME}; a trial resolves them from its environment again.
    run_dir, base = cfg.run_dir, redact_obj(base)
    if cfg.eval.only:  # baselines, decoding sweeps: nothing to train on
        trial_fn = tune.with_parameters(eval_trial, base=base, storage=cfg.storage)
    else:
        trial_fn = tune.with_parameters(train_trial, base=base, storage=cfg.storage,
                                        tokens=(redact(cfg.model.name), tokens))
    trainable = tune.with_resources(trial_fn, trial_resources(base))
    if resume:
        # Finished trials stay as they are; interrupted ones go on from their last checkpoint; failed ones
        # already had their retries (recovery.max_failures) unless --retry-errored asks for more.
        return tune.Tuner.restore(store.uri("tune"), trainable, resume_unfinished=True,
                                  resume_errored=retry_errored)

    s, sc = SearchConfig.model_validate(base["search"]), cfg.scheduler
    search_alg = None
    if s.algorithm == "optuna":
        import optuna

        from harness.optuna_search import ResumableOptunaSearch

        search_alg = ResumableOptunaSearch(
            sampler=optuna.samplers.TPESampler(seed=s.seeds[0]),
            storage=optuna.storages.RDBStorage(f"sqlite:///{run_dir / 'optuna.db'}"),
            study_name=cfg.name,
        )
    if sc.type == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=cfg.reports_per_trial,
                                  grace_period=sc.grace_period, reduction_factor=sc.reduction_factor)
    elif sc.type == "median":
        scheduler = MedianStoppingRule(time_attr="training_iteration", grace_period=sc.grace_period,
                                       min_samples_required=2)
    else:
        scheduler = FIFOScheduler()

    # Keep-best-k checkpoints by a metric every report carries (an end-of-trial metric would rank none).
    score, order = (s.metric, s.mode) if s.metric in cfg.report_metrics() else ("eval_loss", "min")
    searched = list(s.space) + (["train.seed"] if len(s.seeds) > 1 else [])
    reporter = tune.CLIReporter(
        parameter_columns=[p for p in searched if p not in s.space or s.space[p].kind != "tie"],
        metric_columns={"training_iteration": "report", s.metric: s.metric, "best_eval_loss": "best",
                        "tokens_per_second": "tok/s", "node": "node"},
        max_report_frequency=15, sort_by_metric=True,
    )
    callbacks: list[Any] = [ResultsWriter(run_dir, searched, cfg.eval.metrics(), cfg.reports_per_trial, base, store)]
    from harness.study import StudyRecorder  # every sweep as an Optuna study (optuna-dashboard)

    callbacks.append(StudyRecorder(run_dir / "optuna.db", cfg.name, s, callbacks[0]))
    if cfg.wandb.enabled and cfg.wandb.mode != "disabled":
        from harness.wandb_logger import WandbLogger

        w = base["wandb"]
        callbacks.append(WandbLogger(project=w["project"], entity=w["entity"], group=base["name"],
                                     dir=str(run_dir), mode=cfg.wandb.mode))
    return tune.Tuner(
        trainable,
        param_space=param_space(s),
        tune_config=tune.TuneConfig(
            metric=s.metric, mode=s.mode, search_alg=search_alg, scheduler=scheduler,
            num_samples=s.num_samples, max_concurrent_trials=s.max_concurrent,
            # A worker that finished a trial runs the next one (imports kept, no process start-up);
            # trainables.distributed.trial_process frees the trial's memory and resets its peaks.
            reuse_actors=cfg.ray.reuse_workers,
        ),
        run_config=tune.RunConfig(
            name="tune", storage_path=cfg.storage, callbacks=callbacks, verbose=1, progress_reporter=reporter,
            failure_config=tune.FailureConfig(max_failures=cfg.recovery.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.recovery.keep_checkpoints,
                                                    checkpoint_score_attribute=score, checkpoint_score_order=order),
        ),
    )


def connect(cfg: SweepConfig) -> None:
    """Join the cluster at cfg.ray_address, or start a private local Ray instance ("local"): without
    "local" Ray would join whatever cluster a `ray start` left running on this machine."""
    import logging

    import ray

    address = cfg.ray_address
    kwargs: dict[str, Any] = {"logging_level": "WARNING", "configure_logging": True}

    def quiet_train_cleaner() -> None:
        """Ray Train's placement-group cleaner asks the state API every second whether its run is alive;
        without the dashboard (ray[default]) each failed query is a warning on this console. Nested, so
        that Ray ships it by value: it runs before a worker can import this project."""
        import logging

        logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(
            logging.ERROR)

    if any(w > 1 for w in _levels(cfg, "resources.workers_per_trial")) and not address.startswith("ray://"):
        kwargs["runtime_env"] = {"worker_process_setup_hook": quiet_train_cleaner}
    # results.csv replaces Tune's result.json / progress.csv, whose absence it would warn about per trial
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    if address == "local":
        from harness.reaper import watch

        watch()  # Ray's agents would outlive a killed driver by up to a minute
        _no_keys_in_runtime_envs()
        ray.init(address="local", include_dashboard=False, **kwargs)
        return
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:  # noqa: BLE001 - every way of not reaching the cluster ends the same way
        causes = [e]
        while causes[-1].__cause__ is not None:
            causes.append(causes[-1].__cause__)
        if any("Authentication" in type(c).__name__ or "InvalidAuthToken" in str(c) for c in causes):
            hint = ("the cluster requires its token: export RAY_AUTH_MODE=token and RAY_AUTH_TOKEN "
                    "(or copy ~/.ray/auth_token from the head node)")
        elif address.startswith("ray://") and any(isinstance(c, ImportError) for c in causes):
            hint = "Ray Client needs `pip install 'ray[client]'`, or use host:port (the GCS port, 6379)"
        else:
            hint = "check that the head node runs (`ray status --address HOST:PORT` there) and the host and port"
        fail([f"ray.address: cannot join the Ray cluster at {address} ({type(e).__name__}); {hint}"])


def _no_keys_in_runtime_envs() -> None:
    """Ray Tune copies AWS keys from the driver's environment into every trial actor's runtime env, and
    Ray's runtime-env agent writes that env to its log (/tmp/ray/session_*/logs). A local Ray's workers
    inherit the driver's environment anyway: copy none there. (On a cluster the copy is how the keys
    reach the other nodes; docs/cluster.md.)"""
    from ray.tune.execution import class_cache

    from trainables.secrets import secret_names

    class_cache.ENV_VARS_TO_PROPAGATE = set(class_cache.ENV_VARS_TO_PROPAGATE) - secret_names()


def _quiet_env(cfg: SweepConfig) -> None:
    """Environment set before Ray starts, so that every worker inherits it."""
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"  # the classic table honours our choice of columns
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our ResultsWriter replaces them
    # Ray's memory monitor kills a worker when the node runs low; Tune (2.60) does not expect that error
    # and the whole sweep dies with it. Without the monitor the kernel's OOM killer picks a trial worker
    # (Ray gives them oom_score_adj 1000): a failed trial, retried and recorded like any other.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    if cfg.wandb.enabled:
        os.environ["WANDB_MODE"] = cfg.wandb.mode
        os.environ.setdefault("WANDB_SILENT", "true")
    if cfg.search.metric not in cfg.report_metrics():
        # The objective is measured at the end of a trial only (with scheduler fifo: cross_checks refuses ASHA
        # and median stopping on it, they rank trials by intermediate reports). Ray Tune requires TuneConfig's
        # metric in EVERY report and stops the whole sweep at the first intermediate one; this variable, read
        # by the Tune controller in this process, is Ray's only way to lift that. What the check guarded is
        # checked here instead: cross_checks (a configured evaluation produces the metric) and the trial
        # itself (trainables.evaluate.require_objective: its final report carries it, or the trial fails).
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"


def summarize(cfg: SweepConfig, rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    metric = cfg.search.metric
    cols = ["trial_id", "status"] + [f"config/{p}" for p in cfg.search.space] + [
        metric, "best_eval_loss", "train_seconds", "tokens_seen", "tokens_per_second"]
    table = Table(title=f"{cfg.name}: {len(rows)} trials ({metric}, {cfg.search.mode})")
    for c in dict.fromkeys(cols):
        table.add_column(c.removeprefix("config/"))
    for r in rows:
        table.add_row(*[f"{r.get(c):.4g}" if isinstance(r.get(c), float) else str(r.get(c, ""))
                        for c in dict.fromkeys(cols)])
    Console().print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.address:
        overrides.append(f"ray.address={args.address}")
    try:
        cfg, _ = load_sweep(args.sweep_file, overrides)
    except ConfigError as e:
        fail(list(dict.fromkeys(e.problems + section_problems(e.raw))))  # cross_checks ran some already
    _disk.update(run_dir=cfg.run_dir, argv=argv if argv is not None else sys.argv[1:])
    if not args.dry_run and cfg.run_dir.exists():  # one live driver per run directory: another one's is
        hold_run_dir(cfg)                           # refused first thing (the lock is this driver's until it exits)
    from trainables.data.tokenize import Tokens
    from trainables.secrets import redact, register

    register(*_levels(cfg, "eval.judge.api_key_env"))  # masked here and in every trial (they inherit it)
    sys.argv[1:] = [redact(a) for a in sys.argv[1:]]  # W&B and Ray record the command line
    from harness.dashboard import port_problems

    if problems := secret_path_problems(cfg) + port_problems(args.dashboard):
        fail(problems)
    tokenizer = preflight(cfg)
    tokens = Tokens(tokenizer)
    if args.dry_run:
        print_plan(cfg, plan(cfg, tokens))
        return 0
    store = open_storage(cfg)
    try:
        resume = check_run_dir(cfg, args.resume, count_trials(cfg.search), store)
    except SystemExit:
        from harness.lock import release

        release(cfg.run_dir, tidy=True)
        raise
    model = None
    if needs_model(cfg):
        from trainables.models import load_model

        print("scoring the pool with the base model once for all trials (cached)...")
        model = load_model(cfg.model.name, "none", cfg.model.trust_remote_code)[0]
        try:
            prescore(cfg, tokenizer, model)
        except ValueError as e:
            fail([str(e)])
    preembed(cfg)
    the_plan = plan(cfg, tokens, model)
    _disk["need"] = the_plan["disk_bytes"]
    print_plan(cfg, the_plan)
    del model

    base = cfg.model_dump(mode="json")
    run_dir = cfg.run_dir
    hold_run_dir(cfg)  # creates run_dir; taken already when it existed
    if resume:
        store.pull()  # a URI's results, histories and Optuna study: resume on any machine
        resume = _prepare_resume(store)
    else:
        from trainables.paths import atomic_write_text
        from trainables.secrets import redact_obj

        meta = {**run_metadata(argv if argv is not None else sys.argv[1:]), "metric_directions": cfg.directions()}
        atomic_write_text(run_dir / "sweep.yaml", yaml.safe_dump(redact_obj({**base, **meta}), sort_keys=False))
        store.push()

    _quiet_env(cfg)
    connect(cfg)
    t0 = time.perf_counter()
    from harness.diskfull import quiet_ray

    quiet_ray()
    tuner = build_tuner(cfg, base, resume, store, tokens.table, args.retry_errored)
    if args.dashboard:
        from harness.dashboard import start

        start(args.dashboard, run_dir / "optuna.db")
    try:
        tuner.fit()
    except Exception as e:  # Ray Tune itself broke (a trial's failure never gets here): keep what is done
        import traceback

        from harness.diskfull import disk_full
        from trainables.paths import atomic_write_text

        if disk_full(e):
            return disk_full_exit(e)
        try:
            atomic_write_text(run_dir / "driver_error.txt", traceback.format_exc())
            store.push()
        except OSError:  # the line below says it all the same
            pass
        again = run_metadata(argv if argv is not None else sys.argv[1:])["command"]
        print(f"error: the sweep stopped ({redact(failure_cause(traceback.format_exc()))}); finished "
              f"trials are in {run_dir / 'results.csv'}, the traceback in {run_dir / 'driver_error.txt'}; "
              f"continue with: {again}{'' if '--resume' in again else ' --resume'}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - t0
    from harness.results import read_rows, write_best

    store.pull()  # what the trials wrote to a URI (evaluation outputs), for best.yaml and the report
    rows = read_rows(run_dir / "results.csv")
    write_best(run_dir, rows, cfg.search.metric, cfg.search.mode)
    summarize(cfg, rows)
    stopped = sum(r["status"] == "EARLY_STOPPED" for r in rows)
    print(f"{len(rows)} trials in {wall:.0f} s ({stopped} stopped early); results: {run_dir / 'results.csv'}")
    interrupted = [r["trial_id"] for r in rows if r["status"] in ("INTERRUPTED", "RUNNING", "PENDING")]
    if interrupted:  # Ctrl-C: everything reported so far is saved; the rest goes on with --resume
        again = run_metadata(argv if argv is not None else sys.argv[1:])["command"]
        print(f"interrupted: {len(interrupted)} trial(s) unfinished, their checkpoints kept; continue with: "
              f"{again}{'' if '--resume' in again else ' --resume'}", file=sys.stderr)
        return 130
    if not args.no_report:
        _report(run_dir)
    store.push()
    if rows and all(r["status"] == "ERROR" for r in rows):
        print(f"error: every trial failed; see the error column of {run_dir / 'results.csv'}", file=sys.stderr)
        return 1
    return 0


def failure_cause(trace: str) -> str:
    """The exception that ended a traceback, whole, on one line: from the last line naming an exception
    class to the end (a message may span lines). Never cut: Ray's messages put the fix after the cause."""
    import re

    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    named = [i for i, ln in enumerate(lines) if re.match(r"[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b", ln)]
    return " ".join(lines[named[-1] if named else -1:])


_disk: dict[str, Any] = {}  # what the disk-full line needs: run_dir, argv, need (the plan's estimate)


def disk_full_exit(error: BaseException) -> int:
    """A full disk, anywhere after validation: one line (where, free, needed, how to go on), written to
    nothing but stderr; the exit code says which (harness/diskfull.py)."""
    from harness.diskfull import EXIT_DISK_FULL, disk_full, message, resume_command

    # The trials still running fail on the same disk; Ray would print each one's traceback at shutdown.
    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"
    again = resume_command(run_metadata(_disk.get("argv", []))["command"], error)
    print(f"error: {message(disk_full(error), _disk.get('run_dir', Path('.')), _disk.get('need'), again)}",
          file=sys.stderr)
    return EXIT_DISK_FULL


def _prepare_resume(store: Storage) -> bool:
    """Repair what a kill left in Ray's state (harness/resume.py; a local or shared path only: Ray writes
    a URI's state in whole files); False when there is nothing to restore yet (killed before Ray saved
    its first state): the sweep then starts in the same place."""
    from ray import tune

    from harness.resume import ResumeError, ended_trials, repair

    if not store.remote:
        try:
            notes = repair(store.local / "tune", *ended_trials(store.local))
        except ResumeError as e:
            fail([str(e)])
        for note in notes:
            print(f"resume: {note}")
    if not tune.Tuner.can_restore(store.uri("tune")):
        print(f"resume: no trial state saved in {store.uri('tune')} yet; starting the sweep")
        return False
    return True


def _report(run_dir: Path) -> None:
    """The analysis report; a failure there must not cost the sweep's results."""
    try:
        from analysis.report import write_report
    except ImportError:
        return
    try:
        t = time.perf_counter()
        path = write_report([run_dir])
        print(f"report: {path} ({time.perf_counter() - t:.1f} s)")
    except Exception as e:  # noqa: BLE001 - the results are already on disk
        print(f"warning: report failed ({type(e).__name__}: {e}); rerun: python -m analysis.report {run_dir}",
              file=sys.stderr)


def exit_now(code: int) -> None:
    """Leave without the interpreter's slow teardown of torch, transformers and Ray (~3 s on 2 cores,
    measured) once everything is written: Ray is shut down and every log and stream flushed first."""
    import logging

    if "ray" in sys.modules:
        sys.modules["ray"].shutdown()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def mask_process() -> list[str]:
    """The driver's console with secret values masked (main() masks its sys.argv, which W&B and Ray
    record); returns the arguments as given."""
    from trainables.secrets import MaskedStream

    argv = sys.argv[1:]
    sys.stdout, sys.stderr = MaskedStream(sys.stdout), MaskedStream(sys.stderr)
    return argv


if __name__ == "__main__":
    try:
        code = main(mask_process())
    except SystemExit as e:  # exit code 2 of fail(): the same fast way out
        if not isinstance(e.code, int):
            raise
        code = e.code
    except OSError as e:  # a full disk outside Ray Tune (the run directory, sweep.yaml, best.yaml)
        from harness.diskfull import disk_full

        if not disk_full(e):
            raise
        code = disk_full_exit(e)
    exit_now(code)
