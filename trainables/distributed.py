"""One trial in one process, or data-parallel over several (Ray Train inside Ray Tune).

The training loop (trainables/trial.py `train_loop`) talks to whatever runs it through a session
(trial.py `TrialSession`):
  Session     the Ray Tune trial process itself (resources.workers_per_trial: 1): every method is the
              identity or Ray Tune's own call, so a one-process trial runs exactly as without it
  DDPSession  one of N Ray Train workers: the LoRA model wrapped in DistributedDataParallel, each worker
              trains on its share of every optimizer step's micro-batches, gradients and loss sums are
              summed over the workers (so N workers take exactly the step one process would take with
              all the micro-batches), and rank 0 checkpoints and writes the trial's files; its reports
              are the trial's reports

`run` is Ray Tune's entry point. With several workers it follows Ray Train V2's pattern for Train inside
Tune: the Tune trial becomes a thin driver (it reserves only a little memory, harness/sweep.py
`trial_resources`) that runs a TorchTrainer (gloo on CPU, nccl on GPU) and forwards rank 0's reports
to Tune with TuneReportCallback. The TorchTrainer reserves the workers' CPUs and GPUs.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import gc
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from trainables.batching import Batch
from trainables.data.tokenize import IGNORE
from trainables.paths import REUSE_WAIT_S


@contextlib.contextmanager
def trial_process() -> Iterator[None]:
    """One Tune trial in a worker process that may have run other trials before (ray.reuse_workers):
    the process's peak-memory counters start again with this trial, and what the trial allocated is
    handed back when it ends, so the next trial in the same process starts from the same memory."""
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(REUSE_WAIT_S))
    with contextlib.suppress(OSError):  # Linux: "5" resets the peak RSS (VmHWM, ru_maxrss) to the current
        Path("/proc/self/clear_refs").write_text("5")
    if torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()
    try:
        yield
    finally:
        gc.collect()
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        if "torch._dynamo" in sys.modules:  # train.compile: compiled graphs hold the old model
            sys.modules["torch._dynamo"].reset()
        # glibc keeps what the trial freed in its heaps for reuse; without this a reused worker held
        # ~1 GB more per trial of the default model (measured: tests/test_worker_reuse.py).
        with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
            ctypes.CDLL("libc.so.6").malloc_trim(0)


# glibc serves blocks of this size and more with mmap, so each freed block goes back to the OS. Its default
# raises that threshold to the largest block freed so far (up to 32 MiB): a pack's activations, of many sizes
# as its members' passes differ, then stay in a fragmented heap. Profile (docs/performance.md): a pack of 4,
# one member per pass, peaked at 3.3 GB with the default and 2.0 GB with this, ~20% slower.
MMAP_THRESHOLD = 128 * 1024


def return_freed_memory() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD for this process (a pack actor's; why: there). False
    where the C library is not glibc."""
    m_mmap_threshold = -3  # malloc.h
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): its allocator is left as it is
        return bool(ctypes.CDLL("libc.so.6").mallopt(m_mmap_threshold, MMAP_THRESHOLD))
    return False


def where() -> dict[str, str]:
    """The Ray node this process runs on: node_id (results.csv) and a short label for the live table."""
    host = socket.gethostname().split(".")[0]
    try:
        import ray

        node_id = ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - outside Ray (direct calls in tests)
        return {"node_id": host, "node": host}
    return {"node_id": node_id, "node": f"{host}/{node_id[:6]}"}


class Session:
    """A single-process trial: everything is local, reports go to Ray Tune."""

    def __init__(self, trial_id: str, rank: int = 0, world_size: int = 1):
        self.trial_id, self.rank, self.world_size = trial_id, rank, world_size
        self.place = where()

    @property
    def is_main(self) -> bool:
        """The process that writes the trial's files (selected ids, adapter, evaluations)."""
        return self.rank == 0

    def step_share(self, batches: list[Batch]) -> list[Batch]:
        """This process's micro-batches of one optimizer step (every one, in one process). Every worker
        gets the same count, as DDP syncs at every backward: a short share is topped up with a copy of
        a micro-batch whose targets are all ignored (loss 0, gradient 0)."""
        mine = batches[self.rank :: self.world_size]
        blank = dataclasses.replace(batches[0], targets=torch.full_like(batches[0].targets, IGNORE), n_labels=0)
        return mine + [blank] * (-(-len(batches) // self.world_size) - len(mine))

    def wrap(self, model: Any) -> Any:
        """The module to run training forward passes through."""
        return model

    def all_sum(self, value: float | torch.Tensor) -> float:
        """`value` summed over all processes of the trial (one process: itself)."""
        return float(value)

    def get_checkpoint(self) -> dict[str, Any] | None:
        """The TrainState dict of the trial's last checkpoint (state.pt), or None."""
        from ray import tune

        return _load_state(tune.get_checkpoint())

    def tagged(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """Metrics with this node and the world size, unless they name the node they were made on (a
        finished trial's last report, said again after a resume)."""
        return {**self.place, "world_size": self.world_size, **metrics}

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        """Report metrics (tagged), checkpointing `state` as state.pt when given."""
        from ray import tune

        metrics = self.tagged(metrics)
        if state is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


class DDPSession(Session):
    """One Ray Train worker of a data-parallel trial (torch.distributed is already initialised)."""

    def __init__(self, trial_id: str):
        import ray.train
        import ray.train.torch

        ctx = ray.train.get_context()
        super().__init__(trial_id, ctx.get_world_rank(), ctx.get_world_size())
        if torch.cuda.is_available():  # Ray gives each worker its GPU; "cuda" now means that one
            torch.cuda.set_device(ray.train.torch.get_device())

    def wrap(self, model: Any) -> Any:
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        # Every rank loaded the same base weights; only the trainable (LoRA) ones need rank 0's values.
        # init_sync=False skips DDP's broadcast of the whole frozen model.
        for p in model.parameters():
            if p.requires_grad:
                dist.broadcast(p.data, src=0)
        on_gpu = next(p for p in model.parameters() if p.requires_grad).is_cuda
        ddp = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if on_gpu else None,
                                      init_sync=False)
        # Sum the workers' gradients instead of averaging them: each worker's loss is already divided by
        # the response tokens of the whole step (train_step's n_labels), as one process would divide it.
        ddp.register_comm_hook(None, _sum_gradients)
        return ddp

    def all_sum(self, value: float | torch.Tensor) -> float:
        import torch.distributed as dist

        device = "cuda" if dist.get_backend() == "nccl" else "cpu"
        t = torch.tensor([float(value)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t)

    def get_checkpoint(self) -> dict[str, Any] | None:
        import ray.train

        return _load_state(ray.train.get_checkpoint())

    def report(self, metrics: dict[str, Any], state: dict[str, Any] | None = None) -> None:
        import ray.train

        metrics = self.tagged(metrics)
        # Every rank must report (it is a barrier); rank 0's metrics and checkpoint are the trial's.
        with tempfile.TemporaryDirectory() as d:
            checkpoint = None
            if self.is_main and state is not None:
                torch.save(state, Path(d) / "state.pt")
                checkpoint = ray.train.Checkpoint.from_directory(d)
            ray.train.report(metrics, checkpoint=checkpoint)


def _sum_gradients(state, bucket):  # unannotated: DDP refuses string annotations (future import)
    """DDP communication hook: all-reduce (sum) a bucket of gradients, without DDP's division by N."""
    import torch.distributed as dist

    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


def _load_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        return torch.load(Path(d) / "state.pt", weights_only=False)


def _worker(train_loop: Callable[..., None], params: dict[str, Any], base: dict[str, Any], storage: str,
            tokens: tuple[str, dict], trial_id: str) -> None:
    from trainables.schema import trial_config

    # Each worker resolves the config in its own process: secrets come from its environment, never pickled.
    train_loop(trial_config(base, params), storage=storage, tokens=tokens, session=DDPSession(trial_id))


def run(train_loop: Callable[..., None], params: dict[str, Any], *, base: dict[str, Any], storage: str,
        tokens: tuple[str, dict], cfg: Any) -> None:
    """Run `train_loop(cfg, storage=, tokens=, session=)` for one Tune trial: in this process (with `cfg`, the
    trial's config, validated once), or on resources.workers_per_trial Ray Train workers (waiting for them).

    The Ray Train run is named after the trial under <storage>/train/, so when Tune retries or resumes
    the trial, Ray Train finds the run and its workers continue from its last checkpoint."""
    import ray.train
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    resources = cfg.resources
    n = resources.workers_per_trial
    if n == 1:
        with trial_process():
            train_loop(cfg, storage=storage, tokens=tokens, session=Session(trial_id))
        return
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    gpus = resources.gpus_per_trial / n
    trainer = TorchTrainer(
        functools.partial(_worker, train_loop, params, base, storage, tokens, trial_id),
        torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=n, use_gpu=bool(gpus),
            resources_per_worker={"CPU": resources.cpus_per_trial / n, **({"GPU": gpus} if gpus else {})},
        ),
        run_config=ray.train.RunConfig(
            name=trial_id, storage_path=f"{storage.rstrip('/')}/train", callbacks=[TuneReportCallback()],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    trainer.fit()
