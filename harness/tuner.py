"""The Tuner wiring: Ray started or joined, the environment its workers inherit, and the Tuner built from
the sweep config: the trial function and its resources, the search algorithm, the scheduler, the
callbacks that write results.csv and W&B, the console table, checkpoint retention.
"""

from __future__ import annotations

import os
from typing import Any

from harness.config import ConfigError, SearchConfig, SweepConfig
from harness.console import quiet_driver, worker_setup_hook
from harness.display import Silent
from harness.levels import levels
from harness.space import param_space
from trainables.storage import Storage

# A data-parallel trial's own process only drives its Ray Train workers (which reserve the CPUs and
# GPUs); Ray needs some resource in its request, so it asks for a little memory instead of a CPU.
DRIVER_MEMORY = 256 * 2**20
# A packed trial only relays its pack actor's reports (the actor holds the CPUs and GPUs, trainables/pack_trial.py):
# no CPU, so that packs of cpus_per_trial fill the CPUs (with 0.01 each, 2 packs of 4 at 1 CPU needed 2.08 of 2
# and the second pack waited for the first); memory for its process instead (Ray Tune, no torch, no TrainState: 0.23 GiB measured).
PACKED_TRIAL_MEMORY = 512 * 2**20


def trial_resources(base: dict[str, Any]) -> Any:
    """Resources of each trial, from its own config (resources.* may be searched)."""
    from ray import tune

    from harness.space import resolve

    space = SweepConfig.model_validate(base).search.space

    def request(params: dict[str, Any]) -> Any:
        r = SweepConfig.model_validate(resolve(base, params, space)).resources
        if r.pack > 1:
            bundle = {"CPU": 0, "memory": PACKED_TRIAL_MEMORY}
        elif r.workers_per_trial > 1:
            bundle = {"CPU": 0, "memory": DRIVER_MEMORY}
        else:
            bundle = {"CPU": r.cpus_per_trial, "GPU": r.gpus_per_trial}
        return tune.PlacementGroupFactory([bundle])

    return request


def build_tuner(cfg: SweepConfig, base: dict[str, Any], resume: bool, store: Storage,
                tokens: dict[str, Any], retry_errored: bool = False) -> Any:
    """Tuner(trainable, param_space, TuneConfig(search_alg, scheduler), RunConfig(storage, callbacks)), or
    Tuner.restore for --resume. `tokens`: the plan's encodings (trainables.data.tokenize.Tokens.table), put
    into Ray's object store once by tune.with_parameters and read by every training trial."""
    from ray import tune

    from harness.wandb_logger import TRIAL_OUTPUT
    from trainables.secrets import redact_obj

    # Ray pickles what it is given (tuner.pkl, trial names and dirs, its logs) and W&B records it: both get
    # the config with secret values masked as ${NAME}; a trial resolves them from its environment again.
    base = redact_obj(base)
    trainable = make_trainable(cfg, base, tokens)
    if resume:
        # Finished trials stay as they are; interrupted ones go on from their last checkpoint; failed ones
        # already had their retries (recovery.max_failures) unless --retry-errored asks for more.
        return tune.Tuner.restore(store.uri("tune"), trainable, resume_unfinished=True,
                                  resume_errored=retry_errored)
    s = SearchConfig.model_validate(base["search"])
    # Keep-best-k checkpoints by a metric every report carries (an end-of-trial metric would rank none).
    score, order = (s.metric, s.mode) if s.metric in cfg.report_metrics() else ("eval_loss", "min")
    return tune.Tuner(
        trainable,
        param_space=param_space(s),
        tune_config=tune.TuneConfig(
            metric=s.metric, mode=s.mode, search_alg=search_algorithm(cfg, s), scheduler=make_scheduler(cfg),
            num_samples=s.num_samples, max_concurrent_trials=s.max_concurrent,
            # A worker that finished a trial runs the next one (imports kept, no process start-up);
            # trainables.distributed.trial_process frees the trial's memory and resets its peaks.
            reuse_actors=cfg.ray.reuse_workers,
        ),
        run_config=tune.RunConfig(
            name="tune", storage_path=cfg.storage, callbacks=make_callbacks(cfg, base, store), verbose=1,
            progress_reporter=Silent(),  # harness/display.py: SweepDisplay shows the sweep instead
            log_to_file=TRIAL_OUTPUT,  # each trial's own output, for its W&B run (harness/wandb_logger.py)
            failure_config=tune.FailureConfig(max_failures=cfg.recovery.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.recovery.keep_checkpoints,
                                                    checkpoint_score_attribute=score, checkpoint_score_order=order),
        ),
    )


def make_trainable(cfg: SweepConfig, base: dict[str, Any], tokens: dict[str, Any]) -> Any:
    """The trial function with its fixed arguments (the masked base config, storage, the token table) and
    its per-trial resources."""
    from ray import tune

    from trainables.eval_trial import eval_trial
    from trainables.pack_trial import pack_trial
    from trainables.secrets import redact
    from trainables.trial import train_trial

    if cfg.eval.only:  # baselines, decoding sweeps: nothing to train on
        trial_fn = tune.with_parameters(eval_trial, base=base, storage=cfg.storage)
    else:  # resources.pack > 1: trials served by pack actors (the same for every trial: cross_checks)
        trial_fn = tune.with_parameters(pack_trial if cfg.resources.pack > 1 else train_trial, base=base,
                                        storage=cfg.storage, tokens=(redact(cfg.model.name), tokens))
    return tune.with_resources(trial_fn, trial_resources(base))


def searched_columns(s: SearchConfig) -> list[str]:
    """The searched paths a trial's row and table show: the space's entries, and train.seed for several seeds."""
    return list(s.space) + (["train.seed"] if len(s.seeds) > 1 else [])


def search_algorithm(cfg: SweepConfig, s: SearchConfig) -> Any:
    """Optuna TPE with its study in the run directory (resumable); None: Tune's grid / random generator."""
    if s.algorithm != "optuna":
        return None
    import optuna

    from harness.optuna_search import ResumableOptunaSearch

    return ResumableOptunaSearch(
        sampler=optuna.samplers.TPESampler(seed=s.seeds[0]),
        storage=optuna.storages.RDBStorage(f"sqlite:///{cfg.run_dir / 'optuna.db'}"),
        study_name=cfg.name,
    )


def make_scheduler(cfg: SweepConfig) -> Any:
    """ASHA, median stopping or none (FIFO), at the training loop's report points."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, MedianStoppingRule

    sc = cfg.scheduler
    if sc.type == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=cfg.reports_per_trial,
                             grace_period=sc.grace_period, reduction_factor=sc.reduction_factor)
    if sc.type == "median":
        return MedianStoppingRule(time_attr="training_iteration", grace_period=sc.grace_period,
                                  min_samples_required=2)
    return FIFOScheduler()


def make_callbacks(cfg: SweepConfig, base: dict[str, Any], store: Storage) -> list[Any]:
    """What the driver records as trials report: results.csv and trial files (ResultsWriter), W&B runs."""
    from harness.checkpoints import CheckpointSlimmer
    from harness.display import SweepDisplay
    from harness.plan import count_trials
    from harness.results import ResultsWriter
    from harness.study import StudyRecorder

    s = cfg.search
    shown = [p for p in searched_columns(s) if p not in s.space or s.space[p].kind != "tie"]
    callbacks: list[Any] = [ResultsWriter(cfg.run_dir, searched_columns(s), cfg.eval.metrics(),
                                          cfg.reports_per_trial, base, store),
                            CheckpointSlimmer(cfg.run_dir),  # after ResultsWriter: it reads the .ended marker
                            SweepDisplay(metric=s.metric, mode=s.mode, searched=shown, total_trials=count_trials(s),
                                         reports_per_trial=cfg.reports_per_trial)]
    # every sweep as an Optuna study, whatever its search algorithm (optuna-dashboard reads it); Ray pickles
    # its callbacks into tuner.pkl: the recorder gets the masked search space, as Ray does
    masked_search = SearchConfig.model_validate(base["search"])
    callbacks.append(StudyRecorder(cfg.run_dir / "optuna.db", cfg.name, masked_search, callbacks[0]))
    if cfg.wandb.enabled and cfg.wandb.mode != "disabled":
        from harness.wandb_logger import WandbLogger

        w = base["wandb"]
        callbacks.append(WandbLogger(project=w["project"], entity=w["entity"], group=base["name"],
                                     dir=str(cfg.run_dir), mode=cfg.wandb.mode))
    return callbacks


def connect(cfg: SweepConfig) -> None:
    """Join the cluster at cfg.ray_address, or start a private local Ray instance ("local"): without
    "local" Ray would join whatever cluster a `ray start` left running on this machine."""
    import logging

    import ray

    address = cfg.ray_address
    kwargs: dict[str, Any] = {"logging_level": "WARNING", "configure_logging": True}

    if not address.startswith("ray://"):  # library noise off in every worker (harness/console.py)
        kwargs["runtime_env"] = {"worker_process_setup_hook": worker_setup_hook("nf4" in levels(
            cfg, "model.quantization"))}
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
        raise ConfigError([f"ray.address: cannot join the Ray cluster at {address} ({type(e).__name__}); {hint}"]) from e


def _no_keys_in_runtime_envs() -> None:
    """Ray Tune copies AWS keys from the driver's environment into every trial actor's runtime env, and
    Ray's runtime-env agent writes that env to its log (/tmp/ray/session_*/logs). A local Ray's workers
    inherit the driver's environment anyway: copy none there. (On a cluster the copy is how the keys
    reach the other nodes; docs/cluster.md.)"""
    from ray.tune.execution import class_cache

    from trainables.secrets import secret_names

    class_cache.ENV_VARS_TO_PROPAGATE = set(class_cache.ENV_VARS_TO_PROPAGATE) - secret_names()


def quiet_env(cfg: SweepConfig) -> None:
    """Environment set before Ray starts, so that every worker inherits it."""
    quiet_driver()  # harness/console.py: progress bars of the trials, Ray's token-auth notice
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
