"""A real sweep end to end: Ray Tune + Optuna (sqlite storage) + ASHA + offline W&B, with the
embedded SmolLM2-135M and real Alpaca rows (tiny sizes, about a minute each on 2 cores)."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import read_csv, run_sweep, sweep_env, wandb_runs

pytestmark = pytest.mark.slow


def test_smoke_sweep_writes_results_history_adapters_and_wandb(smoke_run):
    rows = read_csv(smoke_run / "results.csv")
    assert len(rows) == 3
    header = list(rows[0])
    assert header[:6] == ["trial_id", "status", "stopped_early", "error", "node_id", "seed"]
    assert {"config/lora.r", "config/lora.alpha", "eval_loss", "best_eval_loss", "train_seconds",
            "tokens_seen", "train_tokens", "n_examples", "trainable_params", "tokens_per_second"} <= set(header)
    for r in rows:
        assert r["status"] in {"TERMINATED", "EARLY_STOPPED"}, r
        assert int(r["config/lora.alpha"]) == 2 * int(r["config/lora.r"])
        assert float(r["eval_loss"]) > 0 and float(r["best_eval_loss"]) <= float(r["eval_loss"])
        assert int(r["n_examples"]) == 16 and int(r["tokens_seen"]) > 0 and r["node_id"]
        assert float(r["tokenized_in_trial"]) == 0  # the plan tokenized this subset once for every trial
        trial = smoke_run / "trials" / r["trial_id"]
        history = [json.loads(line) for line in (trial / "metrics.jsonl").read_text().splitlines()]
        assert [h["training_iteration"] for h in history] == list(range(1, len(history) + 1))
        assert len(json.loads((trial / "selected_ids.json").read_text())) == 16
        assert json.loads((trial / "config.json").read_text())["lora"]["r"] == int(r["config/lora.r"])
        if r["status"] == "TERMINATED":
            assert len(history) == 4 and (trial / "adapter" / "adapter_config.json").exists()
    # Bigger rank -> more trainable parameters (the LoRA really changed).
    by_rank = {int(r["config/lora.r"]): int(r["trainable_params"]) for r in rows}
    ranks = sorted(by_rank)
    assert all(by_rank[a] < by_rank[b] for a, b in zip(ranks, ranks[1:], strict=False))

    best = yaml.safe_load((smoke_run / "best.yaml").read_text())
    assert best["value"] == min(float(r["eval_loss"]) for r in rows)


def test_smoke_sweep_used_optuna_storage_and_offline_wandb(smoke_run):
    import optuna

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{smoke_run / 'optuna.db'}")
    assert len(study.trials) == 3
    trial_ids = {r["trial_id"] for r in read_csv(smoke_run / "results.csv")}
    runs = wandb_runs(smoke_run)
    assert trial_ids <= set(runs), "one offline W&B run per trial (named by trial id)"
    # Each run has the sweep as its group, the trial's searched parameters as config, its reports as history.
    for r in read_csv(smoke_run / "results.csv"):
        run = runs[r["trial_id"]]
        assert run["group"] == "smoke" and run["config"]["lora.r"] == int(r["config/lora.r"])
        history = (smoke_run / "trials" / r["trial_id"] / "metrics.jsonl").read_text().splitlines()
        assert run["eval_loss"] == [json.loads(h)["eval_loss"] for h in history]


def test_smoke_sweep_console_is_one_plain_line_per_event(smoke_run):
    """Piped (as here): no Tune status block, no library noise, no control characters, nothing cut."""
    import re

    log = (smoke_run / "driver.log").read_text()
    for noise in ("== Status ==", "Checkpoint successfully created", "Token authentication is enabled",
                  "gemm_4bit_forward", "Current best trial"):
        assert noise not in log, noise
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", log)
    rows = read_csv(smoke_run / "results.csv")
    for r in rows:
        tid = r["trial_id"]
        if r["status"] == "ERROR":
            assert f"trial {tid} failed" in log
            continue
        assert f"trial {tid} started: lora.r={r['config/lora.r']}" in log
        assert f"trial {tid} report 1/4: eval_loss " in log
        ended = "stopped early at report" if r["status"] == "EARLY_STOPPED" else "finished at report 4/4"
        assert f"trial {tid} {ended}" in log
        assert re.search(rf"{tid}\s.*{r['status']}", log)  # the summary table: whole ids and statuses
    assert "sweep: 3 of 3 trials done" in log and "…" not in log


def test_smoke_sweep_keeps_adapters_not_optimizer_state(smoke_run):
    """After the sweep every trial has ended: its checkpoints hold the adapter and no optimizer state, so the
    sweep's checkpoints weigh about what its adapters do (not three times as much)."""
    import torch

    for r in read_csv(smoke_run / "results.csv"):
        if r["status"] == "ERROR":  # kept whole for --retry-errored (tests/test_checkpoints.py)
            continue
        (tune_dir,) = (smoke_run / "tune").glob(f"*{r['trial_id']}*")
        states = sorted(tune_dir.glob("checkpoint_*/state.pt"))
        assert states
        adapter_bytes = 4 * int(r["trainable_params"])  # fp32 LoRA weights
        for f in states:
            state = torch.load(f, weights_only=False)
            assert state["optimizer"] is None and state["adapter"]
            assert f.stat().st_size < 1.5 * adapter_bytes + 2**20, f  # a whole checkpoint is 3x the adapter
        if r["status"] == "TERMINATED":
            saved = sum(p.stat().st_size for p in (smoke_run / "trials" / r["trial_id"] / "adapter").iterdir())
            assert sum(f.stat().st_size for f in states) < len(states) * (saved + 2**20)


def test_smoke_sweep_wandb_runs_hold_config_and_own_output(smoke_run):
    rows = read_csv(smoke_run / "results.csv")
    runs = wandb_runs(smoke_run)
    for r in rows:
        if r["trial_id"] not in runs:  # a trial Tune failed before it started has no run
            assert r["status"] == "ERROR"
            continue
        cfg = runs[r["trial_id"]]["config"]
        assert cfg["lora.alpha"] == 2 * int(r["config/lora.r"]) and cfg["train.lr"] == 1.0e-3
        (run_dir,) = (smoke_run / "wandb").glob(f"offline-run-*-{r['trial_id']}")
        out = run_dir / "files" / "output.log"
        if out.exists():  # what the trial printed, and nothing of the driver's console or another trial's
            text = out.read_text()
            assert "sweep: " not in text and not any(o["trial_id"] in text for o in rows if o is not r)
    assert len(list((smoke_run / "wandb").glob("offline-run-*-report-smoke*"))) == 1


def test_a_trial_tokenizes_only_the_examples_the_plans_table_lacks(tmp_path):
    # The driver tokenizes the base subset (8 random examples) and the held-out set once for the sweep.
    # A trial that selects 12 (the same seeded ranking, so 4 more) encodes just those 4; one that selects
    # the base 8 encodes none, whichever of the two its worker ran first.
    proc = run_sweep(
        "sweeps/smoke.yaml", f"output.dir={tmp_path}", "name=tokens", "--no-report", "wandb.enabled=false",
        "search.algorithm=grid", "search.num_samples=1", "search.max_concurrent=1", "scheduler.type=fifo",
        "selection.n=8", "search.space={selection.n: {grid: [12, 8]}}", "train.evals_per_epoch=1",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = read_csv(tmp_path / "tokens" / "results.csv")
    assert {int(r["config/selection.n"]): float(r["tokenized_in_trial"]) for r in rows} == {12: 4, 8: 0}
    assert {int(r["config/selection.n"]): int(r["n_examples"]) for r in rows} == {12: 12, 8: 8}


def test_asha_stops_a_clearly_worse_trial_on_a_named_test_set(tmp_path):
    # Sequential grid: a working learning rate first, then a useless one that ASHA must cut at rung 1.
    # The objective is the perplexity of a named test set, scored at every report (not only at the end).
    proc = run_sweep(
        "sweeps/smoke.yaml", f"output.dir={tmp_path}", "name=asha", "--no-report", "wandb.enabled=false",
        "search.algorithm=grid", "search.num_samples=1", "search.max_concurrent=1",
        "search.space={train.lr: {grid: [0.003, 1.0e-7]}}",
        "eval.perplexity=[eval/evol_instruct_gt.json]", "eval.perplexity_limit=4", "eval.max_len=256",
        "eval.perplexity_every_report=true", "search.metric=ppl_evol_instruct_gt",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = read_csv(tmp_path / "asha" / "results.csv")
    rows = {float(r["config/train.lr"]): r for r in table}
    assert len(table) == 2  # one pass over the grid (smoke.yaml's num_samples: 3 would repeat it 3 times)
    assert rows[0.003]["status"] == "TERMINATED" and rows[0.003]["stopped_early"] == "false"
    assert rows[1e-7]["status"] == "EARLY_STOPPED" and rows[1e-7]["stopped_early"] == "true"
    assert float(rows[1e-7]["tokens_seen"]) < float(rows[0.003]["tokens_seen"])
    assert "stopped early" in proc.stdout
    good = tmp_path / "asha" / "trials" / rows[0.003]["trial_id"] / "metrics.jsonl"
    history = [json.loads(line) for line in good.read_text().splitlines()]
    ppl = [h["ppl_evol_instruct_gt"] for h in history]
    assert len(ppl) == 4 and all(p > 1 for p in ppl) and len(set(ppl)) > 1  # scored at every report, changing
    assert float(rows[0.003]["ppl_evol_instruct_gt"]) == pytest.approx(ppl[-1])


def test_an_end_of_trial_objective_under_fifo_and_optuna(tmp_path):
    # The perplexity of a named test set, measured only at the end of a trial, as search.metric of a training
    # sweep: no environment variable (Ray's check of every report used to stop the sweep at the first
    # intermediate one), Optuna told the value once, at completion; search.mode from the metric's direction.
    env = {k: v for k, v in sweep_env().items() if k != "TUNE_DISABLE_STRICT_METRIC_CHECKING"}
    proc = run_sweep(
        "sweeps/smoke.yaml", f"output.dir={tmp_path}", "name=fifo", "--no-report", "wandb.enabled=false",
        "search.num_samples=2", "scheduler.type=fifo", "selection.n=8", "train.evals_per_epoch=2",
        "eval.perplexity=[eval/evol_instruct_gt.json]", "eval.perplexity_limit=4", "eval.max_len=256",
        "search.metric=ppl_evol_instruct_gt", "search.mode=null", env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = tmp_path / "fifo"
    rows = read_csv(run / "results.csv")
    assert len(rows) == 2 and {r["status"] for r in rows} == {"TERMINATED"}
    ppl = {r["trial_id"]: float(r["ppl_evol_instruct_gt"]) for r in rows}
    for r in rows:  # two reports each; the objective came with the last
        history = [json.loads(line) for line in (run / "trials" / r["trial_id"] / "metrics.jsonl").read_text()
                   .splitlines()]
        assert len(history) == 2 and float(r["eval_loss"]) > 0
    import optuna

    study = optuna.load_study(study_name="fifo", storage=f"sqlite:///{run / 'optuna.db'}")
    assert sorted(t.value for t in study.trials) == sorted(ppl.values())
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    saved = yaml.safe_load((run / "sweep.yaml").read_text())
    assert saved["search"]["mode"] == "min" and saved["metric_directions"]["ppl_evol_instruct_gt"] == "min"
    assert saved["metric_directions"]["eval_seconds"] is None
    best = yaml.safe_load((run / "best.yaml").read_text())
    assert best["value"] == min(ppl.values())


def test_bad_sweep_exits_2_before_ray_starts(tmp_path):
    proc = run_sweep("sweeps/smoke.yaml", "lora.r=0", "trian.epochs=2", f"output.dir={tmp_path}")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["error: lora.r: Input should be greater than or equal to 1 (got 0)",
                     "error: trian: unknown key; did you mean 'train'?"]
    assert not (tmp_path / "smoke").exists()


def test_missing_data_exits_2(tmp_path):
    proc = run_sweep("sweeps/smoke.yaml", "data.train=alpaca/none.json", f"output.dir={tmp_path}")
    assert proc.returncode == 2 and proc.stderr.startswith("error: data.train: 'alpaca/none.json' not found")


def test_eval_only_baselines_run_through_the_cli(tmp_path):
    # eval.only dispatches the eval-only trial: no training, one report, the same held-out eval_loss column.
    proc = run_sweep(
        "sweeps/baselines.yaml", f"output.dir={tmp_path}", "--no-report", "wandb.enabled=false",
        "data.eval_size=4", "eval.perplexity_limit=2", "search.space={eval.icl_shots: {grid: [0, 2]}}",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = {int(r["config/eval.icl_shots"]): r for r in read_csv(tmp_path / "baselines" / "results.csv")}
    assert set(rows) == {0, 2}
    for r in rows.values():
        assert r["status"] == "TERMINATED" and r["stopped_early"] == "false", r
        assert float(r["eval_loss"]) > 0 and float(r["ppl_evol_instruct_gt"]) > 1
        assert r["tokens_seen"] == "" and not (tmp_path / "baselines" / "trials" / r["trial_id"] / "adapter").exists()
    assert rows[0]["eval_loss"] != rows[2]["eval_loss"]  # the in-context examples change the scores
