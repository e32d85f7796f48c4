"""Pre-launch checks: what must hold on this machine before anything starts (the sweep file is valid,
the model and data exist, evaluation inputs can be scored, the run directory is writable, no secret
names a path). Each check returns its problems (one line each, naming the field and the fix); the
driver raises them together as one ConfigError, which `harness.sweep.main` turns into exit code 2.
"""

from __future__ import annotations

import os
from typing import Any

from harness.config import ConfigError, SweepConfig, load_sweep
from harness.levels import combos, levels, searched


def load_config(sweep_file: str, overrides: list[str]) -> SweepConfig:
    """The validated sweep; a sweep that fails validation also gets the machine checks of its valid
    sections, so that every problem is reported in one run."""
    try:
        return load_sweep(sweep_file, overrides)[0]
    except ConfigError as e:  # cross_checks ran some of section_problems already
        raise ConfigError(list(dict.fromkeys(e.problems + section_problems(e.raw)))) from None


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
    from trainables.schema.data import DataConfig

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


def secret_path_problems(cfg: SweepConfig) -> list[str]:
    """A key in name, output.dir or output.mirror would name directories, which Ray's saved state and
    every path in every file record: refuse it (values are masked: trainables/secrets.py)."""
    from trainables.secrets import redact

    fields = {"name": cfg.name, "output.dir": cfg.output.dir, "output.mirror": cfg.output.mirror}
    return [f"{field}: {redact(value)!r} holds the value of a secret environment variable; give credentials "
            "through the environment (e.g. AWS_SECRET_ACCESS_KEY), never in a path"
            for field, value in fields.items() if redact(value) != value]


def preflight(cfg: SweepConfig) -> Any:
    """Everything this machine must provide, checked together: a ConfigError with all the problems, or
    the tokenizer (for the plan)."""
    from transformers import AutoTokenizer

    problems, model_path = existence_problems(cfg.data, cfg.model.name)
    problems = secret_path_problems(cfg) + problems
    problems += embedding_problems(cfg) + output_problems(cfg) + eval_input_problems(cfg)
    if problems:
        raise ConfigError(problems)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    except OSError as e:
        raise ConfigError([f"model.name: cannot load {cfg.model.name!r} ({str(e).splitlines()[0]}); "
                           "check the id, the network, or use a local directory"]) from None
    from trainables.data.prompt_template import use_prompt_template

    return use_prompt_template(tokenizer, cfg.data.prompt_template)  # data.prompt_template replaces the chat template


def eval_input_problems(cfg: SweepConfig) -> list[str]:
    """Evaluation inputs that cannot be scored as configured (MCQ sets, perplexity files, generation
    prompts, judge prompts and references), at the base settings and at every searched level of an eval
    setting that changes what is read."""
    from harness.space import resolve
    from trainables.evaluate import input_problems

    base = cfg.model_dump(mode="json")
    variants = [cfg.eval]
    for path in searched(cfg, ("eval.mcq", "eval.perplexity", "eval.icl_shots", "eval.generate", "eval.judge")):
        variants += [SweepConfig.model_validate(resolve(base, {path: v}, {})).eval for v in levels(cfg, path)]
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
    if cfg.eval.only or "diversity" not in levels(cfg, "selection.strategy"):
        return []
    return [(c["selection.embedding"], c["selection.embedding_model"])
            for c in combos(cfg, ["selection.embedding", "selection.embedding_model"])]


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
