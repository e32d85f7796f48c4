"""The sweep file's schema (pydantic): every section of a sweep YAML, validated as one `SweepConfig`.

The trial imports it (trainables/trial.py `trial_config`), so it lives on the trainables side; the driver's
loading, overrides and checks that probe the machine stay in harness/config.py.
"""

from __future__ import annotations

import builtins
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from results_contract import HELDOUT_METRICS, SPACE_KINDS, TRAIN_METRICS
from trainables.schema.base import Strict
from trainables.schema.data import CurriculumConfig, DataConfig, SelectionConfig
from trainables.schema.eval import EvalConfig


class ConfigError(ValueError):
    """One or more problems, each a line naming the field and the fix. The CLI exits 2 on it."""

    def __init__(self, problems: list[str], raw: dict | None = None):
        self.problems = problems
        self.raw = raw  # the sweep as read (after overrides), for checks of the sections that are valid
        super().__init__("\n".join(problems))


class ModelConfig(Strict):
    name: str = Field("smollm2-135m-instruct", description="embedded alias, local directory or HF id")
    quantization: Literal["none", "nf4"] = Field("none", description="nf4 = 4-bit bitsandbytes (QLoRA)")
    trust_remote_code: bool = False


class TrainConfig(Strict):
    epochs: int = Field(1, ge=1)
    lr: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    max_seq_len: int = Field(256, ge=16)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = 0
    evals_per_epoch: int = Field(4, ge=1, description="eval_loss reports per epoch: the rungs ASHA stops at")
    bf16: Literal["auto", "on", "off"] = Field("auto", description="bf16 autocast where the CPU/GPU has it")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Speed switches; none changes the loss being optimised (docs/performance.md has the measurements).
    packing: bool = Field(True, description="each micro-batch as one row without padding, attention kept inside "
                                            "each example (falls back to group_by_length if the model cannot)")
    group_by_length: bool = Field(True, description="without packing: similar lengths share a micro-batch")
    group_size: int | None = Field(None, ge=1, description="micro-batches per length-sorting window; default 16, "
                                                           "2 when curriculum.order is set; 1 = off")
    compile: bool = Field(False, description="torch.compile the model (pays off on long GPU runs)")
    gradient_checkpointing: bool = Field(False, description="recompute activations: less memory, ~30% slower")

    @field_validator("bf16", mode="before")
    @classmethod
    def _yaml_on_off(cls, v: object) -> object:
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v  # YAML 1.1 reads off as false


class LoraConfig(Strict):
    r: int = Field(8, ge=1)
    alpha: float = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"


class Param(Strict):
    """One search-space entry: exactly one of the kinds below.

    choice: [a, b]   grid: [a, b]   uniform: [lo, hi]   loguniform: [lo, hi]   int: [lo, hi] (inclusive)
    tie: other.path  (value = times * other + plus; e.g. lora.alpha = 2 * lora.r)
    """

    choice: list[Any] | None = None
    grid: list[Any] | None = None
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int: tuple[builtins.int, builtins.int] | None = None  # the field name shadows the builtin here
    tie: str | None = None
    times: float = 1.0
    plus: float = 0.0

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        kinds = [k for k in SPACE_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of {', '.join(SPACE_KINDS)} (got {', '.join(kinds) or 'none'})")
        kind = kinds[0]
        if kind in ("choice", "grid") and not getattr(self, kind):
            raise ValueError(f"{kind} needs at least one value")
        if kind in ("uniform", "loguniform", "int"):
            lo, hi = getattr(self, kind)
            if not lo < hi:
                raise ValueError(f"{kind}: low must be below high (got [{lo}, {hi}])")
            if kind == "loguniform" and lo <= 0:
                raise ValueError(f"loguniform: low must be > 0 (got {lo})")
        if kind != "tie" and (self.times != 1.0 or self.plus != 0.0):
            raise ValueError("times/plus only go with tie")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in SPACE_KINDS if getattr(self, k) is not None)


class SearchConfig(Strict):
    algorithm: Literal["optuna", "random", "grid"] = "optuna"
    space: dict[str, Param] = Field(default_factory=dict, description="dotted path -> Param")
    num_samples: int = Field(1, ge=1, description="optuna/random: trials; grid: repeats of the whole grid")
    metric: str = "eval_loss"
    mode: Literal["min", "max"] | None = Field(
        None, description="default: the metric's own direction (eval_loss min, mcq_acc max, ...)")
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="each config runs once per seed")
    max_concurrent: int = Field(2, ge=1)


class SchedulerConfig(Strict):
    type: Literal["asha", "median", "fifo"] = "asha"
    grace_period: int = Field(2, ge=1, description="reports before a trial may be stopped")
    reduction_factor: float = Field(2.0, gt=1)


class ResourcesConfig(Strict):
    """What one trial reserves. With several workers the trial's CPUs and GPUs are split evenly among them."""

    cpus_per_trial: float = Field(1, gt=0, description="torch threads = CPUs per worker (at least 1)")
    gpus_per_trial: float = Field(0, ge=0, description="fractions share a GPU (each process capped to its share)")
    workers_per_trial: int = Field(1, ge=1, description="data-parallel workers (Ray Train TorchTrainer + DDP)")
    pack: int = Field(1, ge=1, description="trials sharing one base model in one worker (a pack actor holding "
                                           "these resources); 1: every trial its own model")
    pack_members_per_pass: int | None = Field(
        None, ge=1, description="members whose micro-batches go through the base in one forward/backward; "
        "default: all of them on a GPU (one pass per round), 1 on the CPU (the same arithmetic in smaller "
        "passes: half the memory, measured). Activation memory grows with the rows of a pass")


class RayConfig(Strict):
    address: str | None = Field(
        None, description="'auto', 'host:port' or 'ray://host:10001' joins a cluster; default: RAY_ADDRESS, else local"
    )
    reuse_workers: bool = Field(
        True, description="a finished trial's worker process runs the next trial with the same resources "
        "(its imports stay loaded: ~7 s a trial on a CPU); false: a fresh process per trial"
    )

    @field_validator("address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None or v in ("auto", "local") or re.fullmatch(r"(ray://)?[\w.\-\[\]:]+:\d+", v):
            return v
        raise ValueError("expected auto, local, host:port (GCS, default port 6379) or ray://host:port (Ray Client)")


class RecoveryConfig(Strict):
    """What a sweep does about failures: retries of a failing trial, checkpoints kept for resuming."""

    max_failures: int = Field(
        1, ge=0, le=100,
        description="retries of a failing trial (from its last checkpoint) before it is recorded as ERROR; "
                    "a NaN loss is not trained again (it would only come back): each retry fails at once")
    keep_checkpoints: int = Field(
        2, ge=1, le=1000,
        description="checkpoints kept per trial: the best k by eval_loss (or a training search.metric), "
                    "plus always the latest; older ones are deleted so disk use stays bounded")


class OutputConfig(Strict):
    dir: str = Field("runs", description="sweeps land in <dir>/<name>/; a shared path or a URI (s3://, gs://)")
    mirror: str = Field("runs", description="local working copy of <name>/ when dir is a URI (results.csv, report)")
    save_adapter: bool = True


class WandbConfig(Strict):
    enabled: bool = True
    project: str = "lora-sweeps"
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"



class SweepConfig(Strict):
    name: str = Field(..., description="the run directory's name under output.dir: one plain path component")
    description: str = ""
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    selection: SelectionConfig = SelectionConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    train: TrainConfig = TrainConfig()
    lora: LoraConfig = LoraConfig()
    eval: EvalConfig = EvalConfig()
    search: SearchConfig = SearchConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    resources: ResourcesConfig = ResourcesConfig()
    ray: RayConfig = RayConfig()
    recovery: RecoveryConfig = RecoveryConfig()
    output: OutputConfig = OutputConfig()
    wandb: WandbConfig = WandbConfig()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        # The run directory is <output.dir>/<name>: '..', '.' or a '/' would put the sweep somewhere else.
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", v):
            raise ValueError("must be a plain directory name (letters, digits, _ . -; no slash, not starting "
                             "with a dot, so neither . nor ..); e.g. name=lora_rank_2")
        return v

    @model_validator(mode="after")
    def _mode_from_metric(self) -> SweepConfig:
        """search.mode defaults to the objective's declared direction (cross_checks refuses a contradiction)."""
        if self.search.mode is None:
            self.search.mode = self.directions().get(self.search.metric)  # type: ignore[assignment]
        return self

    @model_validator(mode="after")
    def _decontaminate_against_eval_sets(self) -> SweepConfig:
        """Training rows whose prompts appear in the sweep's own evaluation sets would inflate the scores."""
        if self.data.decontaminate_eval:
            used = [p.path for p in self.eval.perplexity] + ([self.eval.generate.data] if self.eval.generate.data else [])
            self.data.decontaminate += [p for p in used if p not in self.data.decontaminate]
            for p in self.eval.perplexity:  # read as the perplexity evaluator reads it
                if p.fields:
                    self.data.decontaminate_fields.setdefault(p.path, dict(p.fields))
        return self

    @property
    def storage(self) -> str:
        """Where the sweep's files live: an absolute path, or a URI (s3://bucket/runs/<name>)."""
        if "://" in self.output.dir:
            return f"{self.output.dir.rstrip('/')}/{self.name}"
        return str(Path(self.output.dir).expanduser().resolve() / self.name)

    @property
    def run_dir(self) -> Path:
        """The sweep's local directory: the storage itself, or its local mirror when storage is a URI."""
        if "://" in self.output.dir:
            return Path(self.output.mirror).expanduser().resolve() / self.name
        return Path(self.storage)

    @property
    def ray_address(self) -> str:
        """The cluster to join: ray.address (or --address), else RAY_ADDRESS, else 'local' (a private instance)."""
        return self.ray.address or os.environ.get("RAY_ADDRESS") or "local"

    @property
    def reports_per_trial(self) -> int:
        """Intermediate reports of a full trial (ASHA's rungs); an eval-only trial reports once."""
        return 1 if self.eval.only else self.train.epochs * self.train.evals_per_epoch

    def directions(self) -> dict[str, str | None]:
        """Every metric a trial of this sweep produces -> "min" / "max", or None (counts, times: no objective).
        An eval-only trial trains nothing (no train_loss) and scores the held-out rows only on request."""
        if not self.eval.only:
            train = dict(TRAIN_METRICS)
        else:
            train = {m: TRAIN_METRICS[m] for m in HELDOUT_METRICS} if self.eval.scores_heldout else {}
        return {**train, **self.eval.directions()}

    def metrics(self) -> list[str]:
        return list(self.directions())

    def objectives(self) -> list[str]:
        """The metrics search.metric may name: those with a direction."""
        return [m for m, d in self.directions().items() if d]

    def report_metrics(self) -> list[str]:
        """Metrics every report carries: what early stopping and keep-best-k can rank by (an eval-only
        trial reports once, with everything)."""
        if self.eval.only:
            return self.metrics()
        return list(TRAIN_METRICS) + self.eval.report_metrics()
