"""python -m harness.sweep FILE [--dry-run] [--resume [--retry-errored]] [--address A] [--no-report] [key=value ...]

The driver, as README's "What a sweep does" tells it: validate the sweep and check this machine
(harness.preflight), plan it and do once what every trial would repeat (harness.plan), take the run
directory (harness.rundir), run the trials with Ray Tune (harness.tuner), then write best.yaml, the
summary and the report (harness.summary). Bad input is one ConfigError carrying every problem, printed
here one line each with exit code 2 before Ray starts.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from harness.config import ConfigError, SweepConfig
from harness.console import plain_when_piped
from harness.dashboard import argv_with_port, port_problems
from harness.judge_server import start_judge
from harness.plan import count_trials, needs_model, plan, preembed, prescore, print_plan, score_once
from harness.preflight import embedding_problems, load_config, preflight
from harness.rundir import META_KEYS, claim_run_dir, hold_run_dir, open_run_dir, resume_hint, run_metadata
from harness.summary import finish
from harness.tuner import build_tuner, connect
from harness.tuner import quiet_env as _quiet_env
from trainables.storage import Storage

# Re-exported: tests and tools import these from the driver's module.
__all__ = ["EXIT_CONFIG", "META_KEYS", "embedding_problems", "main", "needs_model", "preembed", "prescore",
           "run_metadata"]

EXIT_CONFIG = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m harness.sweep", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a LoRA/QLoRA sweep described by a YAML file: validate it, print the plan, run the trials\n"
                    "with Ray Tune, write runs/<name>/results.csv and the report (runs/<name>/report/report.md).",
        epilog="On a terminal one table is updated in place; piped or in CI one line per trial event.\n"
               "Exit codes: 0 done; 1 every trial failed or Ray Tune stopped; 2 bad input; 3 disk full;\n"
               "130 interrupted. After 3, 130 or a stopped Ray Tune, --resume continues the sweep.")
    ap.add_argument("sweep_file", help="YAML sweep file, e.g. sweeps/lora_rank.yaml")
    ap.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.epochs=3 lora.r=16")
    ap.add_argument("--dry-run", action="store_true", help="print the plan (trials, tokens, disk) and start nothing")
    ap.add_argument("--resume", action="store_true", help="continue an interrupted sweep in its output dir")
    ap.add_argument("--retry-errored", action="store_true",
                    help="with --resume: run failed trials again from their last checkpoint")
    ap.add_argument("--address", help="Ray cluster to join ('auto', 'host:6379', 'ray://host:10001'); "
                                      "default: ray.address, else RAY_ADDRESS, else a private local instance")
    ap.add_argument("--no-report", action="store_true", help="skip the analysis report at the end")
    ap.add_argument("--dashboard", type=int, metavar="PORT", help="serve optuna-dashboard on 127.0.0.1:PORT "
                    "(default 8080) while the sweep runs (harness/dashboard.py)")
    # overrides may follow flags; a bare --dashboard takes the default port
    return ap.parse_intermixed_args(argv_with_port(sys.argv[1:] if argv is None else argv))


def main(argv: list[str] | None = None) -> int:
    """The command line: a sweep's exit code; bad input raises SystemExit(2) after one line per problem."""
    args = parse_args(argv)
    plain_when_piped()  # harness/console.py
    try:
        return run(args, argv if argv is not None else sys.argv[1:])
    except ConfigError as e:
        for line in e.problems:
            print(f"error: {line}", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def run(args: argparse.Namespace, argv: list[str]) -> int:
    """One sweep, step by step; any problem before the trials start is a ConfigError."""
    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    cfg = load_config(args.sweep_file, overrides)  # 1. the sweep file and overrides, every problem at once
    _disk.update(run_dir=cfg.run_dir, argv=argv)
    if problems := port_problems(args.dashboard):  # --dashboard's port must be free before anything starts
        raise ConfigError(problems)
    if not args.dry_run and cfg.run_dir.exists():  # one live driver per run directory: another one's is
        hold_run_dir(cfg)                           # refused first thing (the lock is this driver's until it exits)
    mask_secrets(cfg)
    from trainables.data.tokenize import Tokens

    tokens = Tokens(preflight(cfg))  # 2. model, data, evaluation inputs, run directory exist and can be used
    if args.dry_run:
        print_plan(cfg, plan(cfg, tokens))
        print("dry run: nothing was started; run the same command without --dry-run to start the sweep")
        return 0
    store, resume = claim_run_dir(cfg, args.resume, count_trials(cfg.search))
    model = score_once(cfg, tokens.tokenizer)  # scores and embeddings every trial would compute again
    the_plan = plan(cfg, tokens, model)
    del model
    _disk["need"] = the_plan["disk_bytes"]
    print_plan(cfg, the_plan)
    resume = open_run_dir(cfg, store, resume, argv)  # sweep.yaml, or Ray's state repaired for --resume
    base = start_judge(cfg, cfg.model_dump(mode="json"))  # eval.judge.serve: a llama.cpp judge for this sweep
    _quiet_env(cfg)  # 3. the trials, with Ray Tune
    connect(cfg)
    t0 = time.perf_counter()
    tuner = build_tuner(cfg, base, resume, store, tokens.table, args.retry_errored)
    if args.dashboard:  # optuna-dashboard over the sweep's study (harness/study.py), for the sweep's lifetime
        from harness.dashboard import start

        start(args.dashboard, cfg.run_dir / "optuna.db")
    code = fit(tuner, cfg, store, argv)
    if code is not None:
        return code
    # 4. results.csv is written as trials report; best.yaml, the summary, the report
    return finish(cfg, store, time.perf_counter() - t0, resume_hint(argv), report=not args.no_report)


def mask_secrets(cfg: SweepConfig) -> None:
    """The judge's key variable joins the masked ones, here and in every trial (they inherit it); the
    command line, which W&B and Ray record, is masked."""
    from harness.levels import levels
    from trainables.secrets import redact, register

    register(*levels(cfg, "eval.judge.api_key_env"))
    sys.argv[1:] = [redact(a) for a in sys.argv[1:]]


def fit(tuner: Any, cfg: SweepConfig, store: Storage, argv: list[str]) -> int | None:
    """Run the trials; None when Tune returned. Ray Tune itself breaking (a trial's failure never gets here)
    keeps what is done: exit 1 with the cause on one line, or the disk-full exit."""
    from harness.diskfull import quiet_ray

    quiet_ray()
    try:
        tuner.fit()
    except Exception as e:  # noqa: BLE001 - the cause is printed whole, the traceback kept on disk
        import traceback

        from harness.diskfull import disk_full
        from trainables.paths import atomic_write_text
        from trainables.secrets import redact

        if disk_full(e):
            return disk_full_exit(e)
        try:
            atomic_write_text(cfg.run_dir / "driver_error.txt", traceback.format_exc())
            store.push()
        except OSError:  # the line below says it all the same
            pass
        print(f"error: the sweep stopped ({redact(failure_cause(traceback.format_exc()))}); finished "
              f"trials are in {cfg.run_dir / 'results.csv'}, the traceback in {cfg.run_dir / 'driver_error.txt'}; "
              f"continue with: {resume_hint(argv)}", file=sys.stderr)
        return 1
    return None


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
    except SystemExit as e:  # exit code 2 of a ConfigError: the same fast way out
        if not isinstance(e.code, int):
            raise
        code = e.code
    except OSError as e:  # a full disk outside Ray Tune (the run directory, sweep.yaml, best.yaml)
        from harness.diskfull import disk_full

        if not disk_full(e):
            raise
        code = disk_full_exit(e)
    exit_now(code)
