"""A full disk ends the sweep in one line, resumable.

No space (ENOSPC, or a quota: EDQUOT) can strike anywhere: a trial persisting a checkpoint (every trial
would fail the same way, each with tracebacks), results.csv, Ray's copy of its state. The first sign of
it stops the sweep (`ResultsWriter` raises DiskFull out of Ray Tune), Ray's per-trial tracebacks of it are
dropped, and the driver prints one line: where, how much is free, how much the sweep needs (the plan's
estimate, `sweep_bytes`), and the --resume command; exit code EXIT_DISK_FULL. Reporting writes nothing.
"""

from __future__ import annotations

import errno
import logging
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXIT_DISK_FULL = 3
_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# How the error reads once Ray or pyarrow has turned it into text (pyarrow drops the errno and the path).
_SAYS_FULL = re.compile(r"No space left on device|Disk quota exceeded|\[Errno (?:28|122)\]", re.IGNORECASE)
ADAM_COPIES = 3  # a checkpoint holds the LoRA weights and AdamW's two moments, all fp32


class DiskFull(OSError):
    """The disk under `filename` is full; raised to stop the sweep. `errored`: a trial was recorded as
    failed by it (its last retry), so continuing needs --retry-errored too."""

    def __init__(self, where: str | None = None, errored: bool = False):
        super().__init__(errno.ENOSPC, "No space left on device", where)
        self.errored = errored


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__, getattr(e, "cause", None)]  # RayTaskError keeps the trial's as .cause
        todo += list(getattr(e, "exceptions", ()))


def says_full(text: str) -> bool:
    return bool(_SAYS_FULL.search(text))


def disk_full(exc: BaseException) -> OSError | None:
    """The out-of-space error in `exc` or anything it wraps (its path, when known, in .filename)."""
    found = None
    for e in _chain(exc):
        if isinstance(e, OSError) and (e.errno in _ERRNOS or says_full(str(e))):
            if e.filename:
                return e
            found = found or e
    return found


class _DropDiskFullTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] is not None and disk_full(record.exc_info[1]))


def quiet_ray() -> None:
    """Ray Tune logs every failed trial's traceback; a full disk is said once, by the driver."""
    logging.getLogger("ray.tune.execution.tune_controller").addFilter(_DropDiskFullTracebacks())


def lora_params(model_path: str, target_modules: list[str] | str, r: int) -> int:
    """Trainable LoRA parameters at rank r: r x (in + out) of every targeted linear layer (peft's all-linear:
    all but the output layer). The model is built on the meta device: no weights are read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    out = model.get_output_embeddings()
    total = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or module is out:
            continue
        if target_modules == "all-linear" or name.rsplit(".", 1)[-1] in target_modules:
            total += r * (module.in_features + module.out_features)
    return total


def sweep_bytes(params: int, trials: int, keep: int, concurrent: int, save_adapter: bool) -> int:
    """Disk a sweep fills at its peak: per running trial its kept checkpoints (keep best + the latest) and
    the one being written before the oldest is deleted, whole; per ended trial the same checkpoints without
    the optimizer state (harness/checkpoints.py: the adapter alone); each trial's saved adapter and ~1 MB of
    histories, configs and W&B files."""
    checkpoint, slim = params * 4 * ADAM_COPIES, params * 4
    adapter = params * 4 if save_adapter else 0
    running = min(concurrent, trials)
    return running * ((keep + 2) * checkpoint + adapter + 2**20) + (trials - running) * (
        (keep + 1) * slim + adapter + 2**20)


def free_bytes(path: Path) -> tuple[int, int, Path]:
    """(free, total, the existing directory measured) for the filesystem `path` is or will be on."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    usage = shutil.disk_usage(path)
    return usage.free, usage.total, path


def mb(n: int) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def resume_command(command: str, error: BaseException) -> str:
    """The command that continues the sweep once there is space: `command` with --resume (and
    --retry-errored when a trial's last retry failed for want of space)."""
    flags = ["--resume"] + (["--retry-errored"] if any(getattr(e, "errored", False) for e in _chain(error)) else [])
    return " ".join([command] + [f for f in flags if f not in command.split()])


def message(error: OSError | None, run_dir: Path, need: int | None, again: str) -> str:
    """The one line. `error`: what failed (its path, when it says one); `need`: the plan's estimate."""
    where = Path(error.filename) if error is not None and error.filename else Path(run_dir)
    try:
        free, total, _ = free_bytes(where)
        space = f" ({mb(free)} free of {mb(total)})"
    except OSError:
        space = ""
    wants = f"; the sweep needs about {mb(need)} there (the plan's estimate)" if need else ""
    return (f"disk full: no space left on the device of {where}{space}{wants}; free some space, or move "
            f"{run_dir} to a larger disk and point output.dir there, then continue with: {again}")


def estimate(cfg: Any, model_path: str | None, trials: int, r: int) -> int | None:
    """sweep_bytes for a config at LoRA rank r; None when the model's shape cannot be read here."""
    if cfg.eval.only:
        return trials * 2**20
    try:
        params = lora_params(model_path or cfg.model.name, cfg.lora.target_modules, r)
    except Exception:  # noqa: BLE001 - an estimate: a model transformers cannot build here has none
        return None
    return sweep_bytes(params, trials, cfg.recovery.keep_checkpoints, cfg.search.max_concurrent,
                       cfg.output.save_adapter)
