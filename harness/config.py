"""Loading a sweep file: read YAML, merge `key=value` overrides, validate (trainables/schema), cross-check.

Errors come back as one line per problem, naming the dotted YAML path and the fix:
    lora.r: Input should be greater than or equal to 1 (got 0)
    trian: unknown key; did you mean 'train'?
"""

from __future__ import annotations

import copy
import difflib
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

# The schema lives in trainables/schema/ (the trial reads it too); its names are re-exported here for the driver.
from trainables.schema.base import Strict  # noqa: F401
from trainables.schema.data import CurriculumConfig, DataConfig, SelectionConfig  # noqa: F401
from trainables.schema.dotted import _named, get_dotted, item_name, named_item_model, set_dotted  # noqa: F401
from trainables.schema.eval import EvalConfig
from trainables.schema.sweep import (  # noqa: F401
    HELDOUT_METRICS,
    SPACE_KINDS,
    TRAIN_METRICS,
    ConfigError,
    LoraConfig,
    ModelConfig,
    OutputConfig,
    Param,
    RayConfig,
    RecoveryConfig,
    ResourcesConfig,
    SchedulerConfig,
    SearchConfig,
    SweepConfig,
    TrainConfig,
    WandbConfig,
)

# ---------------------------------------------------------------------------------------------
# Loading, overrides and cross-field checks


def _suggest(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(options)}"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the field at `loc` (for 'did you mean'); a list item's part (its
    index or name) leads to the item's model."""
    model: Any = SweepConfig
    item: type[BaseModel] | None = None
    for part in loc:
        if item is not None:
            model, item = item, None
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return None
        ann = model.model_fields[part].annotation
        item = named_item_model(ann)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    return model




def _named_loc(loc: tuple, raw: Any) -> tuple:
    """A validation error's location with named entries named instead of numbered (eval.mcq.medqa.shots,
    not eval.mcq.0.shots) where the entry has a usable name; `raw`: the sweep as validated."""
    out, node, model, item = [], raw, SweepConfig, None
    for part in loc:
        if item is not None and isinstance(node, list) and isinstance(part, int) and part < len(node):
            name, node, model, item = item_name(node[part]), node[part], item, None
            out.append(name if name and re.fullmatch(r"[A-Za-z0-9_]+", name) else part)
            continue
        out.append(part)
        fields = model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
        ann = fields[part].annotation if isinstance(part, str) and part in fields else None
        item = named_item_model(ann)
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        node = node.get(part) if isinstance(node, dict) else None
    return tuple(out)


_PLAIN_TYPES = {"str", "int", "float", "bool", "dict", "list", "none"}
NO_ECHO = ("api_key_env", "base_url")  # their refused values are not repeated in the error


def _is_union_tag(part: Any) -> bool:
    # pydantic names the branches of a union in the location: list[str], literal['all-linear'], ...
    return isinstance(part, str) and (part.startswith("function-") or "[" in part or "(" in part)


def _union_branches(errors: list[dict]) -> set[tuple]:
    """Locations of the failed branches of a union: `data.train` = str | list[str] fails as both
    ('data', 'train', 'str') and ('data', 'train', 'list[str]'); such pairs become one line."""
    tails: dict[tuple, int] = {}
    for e in errors:
        loc = e["loc"]
        if loc and isinstance(loc[-1], str) and (loc[-1] in _PLAIN_TYPES or _is_union_tag(loc[-1])):
            tails[loc[:-1]] = tails.get(loc[:-1], 0) + 1
    return {e["loc"] for e in errors if tails.get(e["loc"][:-1], 0) > 1 or
            any(_is_union_tag(p) and not p.startswith("function-") for p in e["loc"])}


def _shown_input(e: Any, msg: str, path: str) -> str:
    """' (got X)' after a message that does not already show the input (never a value that may be a key)."""
    got = e.get("input")
    said = isinstance(got, (dict, list)) or got is None or (isinstance(got, str) and repr(got) in msg)
    said = said or (e["type"] == "value_error" and path.endswith(NO_ECHO))  # may hold a pasted key
    return "" if said else f" (got {got!r})"


def _unknown_key_line(path: str, loc: tuple) -> str:
    owner = _model_at(loc[:-1])
    key = str(loc[-1])
    hint = _suggest(key, list(owner.model_fields)) if owner else ""
    if ":" in key:  # YAML read 'tie:lora.r' as one key: flow style needs 'key: value'
        hint = f"; write '{key.split(':', 1)[0]}: {key.split(':', 1)[1]}' with a space after the colon"
    return f"{path}: unknown key{hint}"


def format_errors(err: ValidationError, prefix: str = "", raw: Any = None) -> list[str]:
    lines: list[str] = []
    union: dict[str, list[str]] = {}  # path -> what each branch of a union wanted (one line for all)
    branches = _union_branches(err.errors())
    for e in err.errors():
        tagged = e["loc"] in branches
        loc = _named_loc(tuple(p for p in e["loc"] if not _is_union_tag(p)), raw)
        if tagged and loc and loc[-1] in _PLAIN_TYPES:
            loc = loc[:-1]
        path = prefix + ".".join(str(p) for p in loc)
        msg = e["msg"].removeprefix("Value error, ")
        shown = _shown_input(e, msg, path)
        if e["type"] == "extra_forbidden":
            lines.append(_unknown_key_line(path, loc))
        elif e["type"] == "missing":
            lines.append(f"{path}: required; add it to the sweep file")
        elif tagged:
            if path not in union:
                union[path] = []
                lines.append(path)  # placeholder, filled in below, keeps the order of problems
            union[path].append(msg.removeprefix("Input should be ") + "\0" + shown)
        else:
            lines.append(f"{path or '<root>'}: {msg}{shown}")
    for path, wants in union.items():
        shown = wants[0].split("\0")[1]
        joined = " or ".join(w.split("\0")[0] for w in wants)
        lines[lines.index(path)] = f"{path}: Input should be {joined}{shown}"
    return lines


# PyYAML (YAML 1.1) reads 1e-4, 1e5 and 1.0e12 as strings: its floats need a dot and a signed exponent.
_EXPONENT = re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _yaml11_floats(value: Any) -> Any:
    """1e5 -> 100000.0 everywhere in a loaded document (users mean numbers; grid levels must sort)."""
    if isinstance(value, dict):
        return {k: _yaml11_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml11_floats(v) for v in value]
    return float(value) if isinstance(value, str) and _EXPONENT.match(value) else value


def parse_override(item: str) -> tuple[str, Any]:
    from harness.yaml_input import Refused, load

    if "=" not in item or item.startswith("="):
        raise ConfigError([f"override {item!r}: expected key=value, e.g. train.epochs=3"])
    key, raw = item.split("=", 1)
    try:
        value = load(raw) if raw.strip() else ""
    except Refused as e:
        raise ConfigError([f"override {key.strip()}: {e.problem}"]) from None
    except yaml.YAMLError:
        value = raw
    return key.strip(), _yaml11_floats(value)


def set_override(raw: dict, key: str, value: Any) -> None:
    """Apply one override. `search.space.<dotted setting>[.<kind>]` names a search-space entry, whose keys
    are dotted paths themselves: search.space.lora.r={choice: [4, 16]} sets the entry 'lora.r'."""
    prefix = "search.space."
    if not key.startswith(prefix) or key == prefix:
        set_dotted(raw, key, value)
        return
    rest = key[len(prefix):].split(".")
    cut = next((i for i in range(len(rest), 0, -1) if _field_exists(".".join(rest[:i]))), len(rest))
    if not isinstance(raw.get("search"), dict):
        raw["search"] = {}
    if not isinstance(raw["search"].get("space"), dict):
        raw["search"]["space"] = {}
    space = raw["search"]["space"]
    entry, sub = ".".join(rest[:cut]), ".".join(rest[cut:])
    if sub:  # one key of an entry: search.space.lora.alpha.times=4
        if not isinstance(space.get(entry), dict):
            space[entry] = {}
        set_dotted(space[entry], sub, value)
    else:
        space[entry] = value



def _field_exists(path: str, cfg: Any = None) -> bool:
    """A settable leaf of the schema; `<list>.<name>.<field>` for the named entries of `cfg`."""
    model: Any = SweepConfig
    parts = path.split(".")
    i = 0
    while i < len(parts):
        part = parts[i]
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return False
        ann = model.model_fields[part].annotation
        item = named_item_model(ann)
        if item is not None and i + 1 < len(parts) - 1:
            entries = get_dotted(cfg, ".".join(parts[: i + 1])) if cfg is not None else []
            if parts[i + 1] not in [item_name(e) for e in entries]:
                return False
            model, i = item, i + 2
            continue
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        i += 1
    return model is None  # a leaf, not a whole section


def _leaf_names(cfg: SweepConfig) -> list[str]:
    """Settable dotted paths, for 'did you mean': section.field, and list.<name>.field of named entries."""
    leafs = []
    for s, m in SweepConfig.model_fields.items():
        if not (isinstance(m.annotation, type) and issubclass(m.annotation, BaseModel)):
            continue
        for f, fm in m.annotation.model_fields.items():
            leafs.append(f"{s}.{f}")
            item = named_item_model(fm.annotation)
            if item is not None:
                leafs += [f"{s}.{f}.{item_name(e)}.{k}" for e in get_dotted(cfg, f"{s}.{f}") for k in item.model_fields]
    return leafs


def _check_space(cfg: SweepConfig, raw: dict) -> list[str]:
    """Every searched path exists, every candidate value validates, ties point at searched params."""
    problems = [line for path, p in cfg.search.space.items() for line in _entry_problems(cfg, raw, path, p)]
    return problems + _algorithm_problems(cfg)


def _entry_problems(cfg: SweepConfig, raw: dict, path: str, p: Any) -> list[str]:
    """One search.space entry: its path exists, a tie names a searched untied parameter, each value validates."""
    where, space = f"search.space.{path}", cfg.search.space
    if not _field_exists(path, cfg):
        return [f"{where}: no such setting{_suggest(path, _leaf_names(cfg))}"]
    if p.kind == "tie":
        if p.tie not in space or space[p.tie].kind == "tie":
            return [f"{where}: tie must name another searched, untied parameter (got {p.tie!r})"]
        return []
    problems = []
    values = (p.choice or p.grid or []) if p.kind in ("choice", "grid") else list(getattr(p, p.kind))
    for v in values:
        trial = copy.deepcopy(raw)
        set_dotted(trial, path, v)
        try:
            SweepConfig.model_validate(trial)
        except ValidationError as e:
            problems += [f"{where}: value {v!r} is invalid: {line}" for line in format_errors(e, raw=trial)
                         if line.startswith(path)]
    return problems


def _algorithm_problems(cfg: SweepConfig) -> list[str]:
    """The search algorithm and the kinds of entries (and seeds) it can search."""
    problems, space = [], cfg.search.space
    if cfg.search.algorithm == "optuna" and any(p.kind == "grid" for p in space.values()):
        problems.append("search.space: grid entries need search.algorithm grid or random; use choice with optuna")
    if cfg.search.algorithm == "grid" and any(p.kind not in ("grid", "choice", "tie") for p in space.values()):
        problems.append("search.algorithm: grid needs every space entry to be grid or choice; use random or optuna")
    if cfg.search.algorithm == "optuna" and len(cfg.search.seeds) > 1:
        problems.append("search.seeds: several seeds need search.algorithm grid or random "
                        "(or put train.seed: {choice: [...]} in search.space)")
    return problems


LOOPBACK = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


def judge_key_problems(eval_cfg: EvalConfig, judge_searched: bool = False) -> list[str]:
    """A hosted judge without its key would fail every request at the end of every trial: say so now.
    Servers on this machine (llama.cpp, vLLM) accept any key, so they need none."""
    from urllib.parse import urlparse

    judge = eval_cfg.judge
    host = urlparse(judge.base_url).hostname or ""
    if not (judge.enabled or judge_searched) or host in LOOPBACK or host.startswith("127."):
        return []
    if os.environ.get(judge.api_key_env):
        return []
    return [f"eval.judge.api_key_env: the judge at {judge.base_url} needs an API key but {judge.api_key_env} "
            f"is not set; export {judge.api_key_env}=... (any value for a server without keys)"]


def wandb_key_problems(w: WandbConfig) -> list[str]:
    """W&B online needs a key (WANDB_API_KEY, or `wandb login`'s entry in ~/.netrc or $NETRC): without one every
    trial's run would fail to start, so say it before the sweep starts."""
    import netrc
    from urllib.parse import urlparse

    if not w.enabled or w.mode != "online" or os.environ.get("WANDB_API_KEY"):
        return []
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        if netrc.netrc(os.environ.get("NETRC")).authenticators(host or ""):
            return []
    except (OSError, netrc.NetrcParseError):
        pass
    return ["wandb.mode: online needs a W&B API key; export WANDB_API_KEY=... or run `wandb login`, "
            "or set wandb.mode: offline (sync later with `wandb sync`)"]


def resource_problems(r: ResourcesConfig, ray_address: str) -> list[str]:
    """Shapes no machine can run, and, on a local Ray only, trials bigger than this machine. With a
    cluster address a big trial is fine: Ray keeps it pending until a node that fits joins."""
    problems = []
    if r.workers_per_trial == 1 and r.gpus_per_trial > 1:
        problems.append(f"resources.gpus_per_trial: one worker trains on one GPU (got {r.gpus_per_trial:g}); set "
                        f"resources.workers_per_trial: {math.ceil(r.gpus_per_trial)} for data-parallel training")
    if r.pack > 1 and r.workers_per_trial > 1:
        problems.append(f"resources.pack: packed trials train in one process, not data-parallel (workers_per_trial: "
                        f"{r.workers_per_trial}); set resources.pack: 1 or resources.workers_per_trial: 1")
    per_worker = r.gpus_per_trial / r.workers_per_trial
    if r.workers_per_trial > 1 and r.gpus_per_trial and not per_worker.is_integer():
        problems.append(f"resources.gpus_per_trial: {r.gpus_per_trial:g} GPUs over {r.workers_per_trial} workers is "
                        f"{per_worker:g} each, but each data-parallel worker needs whole GPUs (NCCL); use a "
                        "multiple of resources.workers_per_trial")
    if ray_address != "local":
        return problems
    cpus = os.cpu_count() or 1
    if r.cpus_per_trial > cpus:
        problems.append(f"resources.cpus_per_trial: a trial needs {r.cpus_per_trial:g} CPUs but this machine has {cpus}; "
                        "lower it, or run on a cluster with --address")
    if r.gpus_per_trial > 0:
        try:
            import torch

            gpus = torch.cuda.device_count()
        except ImportError:
            gpus = 0
        if gpus < math.ceil(r.gpus_per_trial):
            problems.append(f"resources.gpus_per_trial: GPUs requested ({r.gpus_per_trial:g} per trial) but this "
                            f"machine has {gpus or 'none'}; set it to 0, or run on a cluster with --address")
    return problems


def pack_problems(cfg: SweepConfig) -> list[str]:
    """What packed trials (resources.pack > 1, trainables/pack_actor.py) cannot do yet: one line each."""
    r = cfg.resources
    if r.pack == 1:
        return ([] if r.pack_members_per_pass is None else
                ["resources.pack_members_per_pass: only packed trials have members; set resources.pack above 1 "
                 "or remove resources.pack_members_per_pass"])
    from trainables.evaluate import EVALUATORS

    fix = "set resources.pack: 1"
    problems = []
    for name in ("resources.pack", "resources.pack_members_per_pass"):
        if name in cfg.search.space:
            problems.append(f"search.space: {name} cannot be searched (it decides how every trial runs); "
                            f"remove it from search.space and give it a fixed value")
    if (r.pack_members_per_pass or 0) > r.pack:
        problems.append(f"resources.pack_members_per_pass: {r.pack_members_per_pass} is more than a pack holds "
                        f"(resources.pack: {r.pack}); set it to at most {r.pack}")
    if cfg.eval.only:
        problems.append(f"resources.pack: eval.only trials train nothing to pack; {fix}")
    ends = [n for n in EVALUATORS.names_in_order() if EVALUATORS.get(n).enabled(cfg.eval)]
    ends += ["perplexity_every_report"] if cfg.eval.perplexity_every_report else []
    if ends:  # they run the model outside a routed forward (generate, lm-eval): a packed model would be wrong
        problems.append(f"resources.pack: packed trials report held-out loss only; eval {', '.join(ends)} needs "
                        f"its own model; {fix}")
    if cfg.train.compile:
        problems.append(f"resources.pack: train.compile is not supported in packed trials; {fix} or "
                        "train.compile: false")
    return problems


def objective_problems(cfg: SweepConfig) -> list[str]:
    """search.metric must be a metric with a direction that the sweep produces; search.mode, when given,
    must agree with that direction."""
    s, directions = cfg.search, cfg.directions()
    choose = f"choose one of: {', '.join(cfg.objectives()) or 'none (configure an evaluation)'}"
    if s.metric not in directions:
        if cfg.eval.only and s.metric in HELDOUT_METRICS:
            return [f"search.metric: eval-only trials score {s.metric!r} only with eval.heldout: true; set it, "
                    f"or {choose}"]
        return [f"search.metric: {s.metric!r} is produced by no configured evaluation; {choose}"]
    direction = directions[s.metric]
    if direction is None:
        return [f"search.metric: {s.metric!r} is a count or diagnostic with no better direction, not an "
                f"objective; {choose}"]
    if s.mode != direction:
        better = "lower" if direction == "min" else "higher"
        return [f"search.mode: {s.mode} contradicts search.metric {s.metric!r} ({better} is better); set "
                f"search.mode: {direction} or leave search.mode out (it defaults from the metric)"]
    return []


def run_dir_problems(cfg: SweepConfig) -> list[str]:
    """The run directory must lie inside output.dir (name is one plain component; this holds whatever the
    name's rules become): a sweep never writes over the directory above its own."""
    base = cfg.output.mirror if "://" in cfg.output.dir else cfg.output.dir  # where run_dir lies on this machine
    root = Path(os.path.normpath(Path(base).expanduser().absolute()))
    if Path(os.path.normpath(root / cfg.name)).parent != root:
        return [f"name: {cfg.name!r} would put the run directory outside {root}; give a plain directory name"]
    return []


def device_problems(cfg: SweepConfig) -> list[str]:
    """train.device: cuda on a local Ray needs a CUDA GPU here (a trial would fail on its first tensor)."""
    entry = cfg.search.space.get("train.device")
    devices = {cfg.train.device} | set((entry.choice or entry.grid or []) if entry else [])
    if "cuda" not in devices or cfg.ray_address != "local":
        return []
    try:
        import torch

        if torch.cuda.is_available():
            return []
    except ImportError:
        pass
    return ["train.device: cuda, but this machine has no CUDA GPU; use train.device: auto (the GPU where there "
            "is one) or cpu, or run on a cluster with --address"]


def cross_checks(cfg: SweepConfig, raw: dict) -> list[str]:
    problems = run_dir_problems(cfg) + _check_space(cfg, raw)
    problems += objective_problems(cfg)
    known_metric = cfg.search.metric in cfg.metrics()
    if cfg.scheduler.type != "fifo" and known_metric and cfg.search.metric not in cfg.report_metrics():
        from trainables.evaluate import perplexity

        fix = ("eval.perplexity_every_report: true" if cfg.search.metric in perplexity.metrics(cfg.eval)
               else "search.metric: eval_loss")
        problems.append(f"scheduler.type: {cfg.scheduler.type} stops trials on intermediate reports, but "
                        f"{cfg.search.metric!r} is only measured at the end of a trial; use scheduler.type: fifo "
                        f"or {fix}")
    if cfg.scheduler.type != "fifo" and cfg.reports_per_trial <= cfg.scheduler.grace_period:
        problems.append(f"scheduler.grace_period: {cfg.scheduler.type} needs more reports than grace_period "
                        f"({cfg.reports_per_trial} = train.epochs x train.evals_per_epoch); raise evals_per_epoch "
                        "or use scheduler.type: fifo")
    problems += resource_problems(cfg.resources, cfg.ray_address) + device_problems(cfg) + pack_problems(cfg)
    problems += judge_key_problems(cfg.eval, "eval.judge.enabled" in cfg.search.space)
    problems += wandb_key_problems(cfg.wandb)
    cur = cfg.curriculum
    if cur.order == "staged" and cur.epochs_per_stage and cur.epochs_per_stage * cur.stages > cfg.train.epochs:
        problems.append(f"curriculum.epochs_per_stage: {cur.stages} stages x {cur.epochs_per_stage} epochs exceed "
                        f"train.epochs ({cfg.train.epochs}); raise train.epochs or lower epochs_per_stage")
    return problems


def read_sweep_file(path: Path) -> dict:
    """The sweep file as a dict (name defaulting to the file's stem), or a ConfigError saying what is wrong
    with the file itself."""
    from harness.yaml_input import load

    example = "pass a YAML file such as sweeps/lora_rank.yaml"
    if not path.exists():
        raise ConfigError([f"sweep file {str(path)!r} not found; {example}"])
    if not path.is_file():
        raise ConfigError([f"sweep file {str(path)!r} is a directory, not a file; {example}"])
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([f"{path}: not UTF-8 text (byte {e.start} is 0x{e.object[e.start]:02x}); save the sweep "
                           "file as UTF-8 YAML"]) from None
    except OSError as e:
        raise ConfigError([f"{path}: cannot read it ({e.strerror}); {example}"]) from None
    try:
        raw = load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError([f"{path}: not valid YAML{at}: {getattr(e, 'problem', e)}"]) from None
    if raw is None:
        raise ConfigError([f"{path}: the sweep file is empty; give at least what to vary (see sweeps/smoke.yaml)"])
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections (name, model, train, ...)"])
    raw = _yaml11_floats(raw)
    raw.setdefault("name", path.stem)
    return raw


def load_sweep(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> tuple[SweepConfig, dict]:
    """Return (validated config, raw dict after overrides). Raises ConfigError listing every problem."""
    raw = read_sweep_file(Path(path))
    for item in overrides:
        set_override(raw, *parse_override(item))
    try:
        cfg = SweepConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(format_errors(e, raw=raw), raw) from None
    problems = cross_checks(cfg, raw)
    if problems:
        raise ConfigError(problems, raw)
    return cfg, raw
