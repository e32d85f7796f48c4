"""Report pipeline on SIMULATED sweep directories (no Ray, no model): the helper
`write_simulated_sweep` writes results.csv, sweep.yaml, best.yaml and trials/*/{config.json,
metrics.jsonl} in the layout the driver writes (DESIGN.md), from a small deterministic
simulation of LoRA training curves. The numbers are made up; the layout is the contract.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import yaml

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ---------------------------------------------------------------------------------------------
# Simulated sweep directories

# SweepConfig().model_dump() of the schema at the time of writing, so the simulation does not
# import the driver (the analysis must not need it either).
DEFAULTS = {
    "name": "", "description": "",
    "model": {"name": "smollm2-135m-instruct", "quantization": "none", "trust_remote_code": False},
    "data": {"train": "alpaca/random_9k.json", "format": "auto", "eval": None, "eval_size": 32, "split_seed": 1234},
    "selection": {"strategy": "random", "n": 100, "token_budget": None, "offset": 0},
    "curriculum": {"order": "none"},
    "train": {"epochs": 1, "lr": 0.0002, "batch_size": 4, "grad_accum": 1, "max_seq_len": 256, "warmup_ratio": 0.03,
              "scheduler": "cosine", "weight_decay": 0.0, "max_grad_norm": 1.0, "seed": 0, "evals_per_epoch": 4,
              "bf16": "auto", "device": "auto"},
    "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
    "eval": {"perplexity": []},
    "search": {"algorithm": "optuna", "space": {}, "num_samples": 1, "metric": "eval_loss", "mode": "min",
               "seeds": [0], "max_concurrent": 2},
    "scheduler": {"type": "asha", "grace_period": 2, "reduction_factor": 2.0},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0}, "ray": {"address": None},
    "output": {"dir": "runs", "save_adapter": True},
    "wandb": {"enabled": True, "project": "lora-sweeps", "entity": None, "mode": "offline"},
}
SPACE_KINDS = ("choice", "grid", "uniform", "loguniform", "int", "tie")


def _dump(spec: dict) -> dict:
    """DEFAULTS overlaid with spec, space entries in model_dump form (every kind key present)."""
    out = json.loads(json.dumps(DEFAULTS))
    for key, value in spec.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key].update(value)
        else:
            out[key] = value
    out["search"]["space"] = {
        path: {**{k: None for k in SPACE_KINDS}, "times": 1.0, "plus": 0.0, **entry}
        for path, entry in out["search"]["space"].items()}
    return out


def _sim_spec(kind: str) -> dict:
    base = {"model": {"name": "smollm2-135m-instruct"}, "train": {"epochs": 2, "evals_per_epoch": 4},
            "scheduler": {"type": "asha", "grace_period": 2}, "wandb": {"enabled": False}}
    if kind == "grid":
        return {**base, "name": "sim-grid", "description": "Does a larger LoRA rank lower held-out loss? (simulated)",
                "search": {"algorithm": "grid", "seeds": [0, 1, 2], "metric": "eval_loss", "mode": "min",
                           "space": {"lora.r": {"grid": [4, 8, 16]}, "lora.alpha": {"tie": "lora.r", "times": 2},
                                     "train.lr": {"choice": [1e-4, 3e-4]}}}}
    if kind == "optuna":
        return {**base, "name": "sim-optuna", "description": "Which hyperparameters matter? (simulated)",
                "eval": {"perplexity": ["test.jsonl"]},
                "search": {"algorithm": "optuna", "num_samples": 16, "metric": "eval_loss", "mode": "min",
                           "space": {"train.lr": {"loguniform": [1e-5, 1e-3]}, "lora.r": {"choice": [4, 8, 16, 32]},
                                     "lora.dropout": {"uniform": [0.0, 0.2]},
                                     "selection.strategy": {"choice": ["random", "first"]}}}}
    if kind == "tiny":
        return {**base, "name": "sim-tiny", "description": "Smoke: two trials (simulated)",
                "search": {"algorithm": "optuna", "num_samples": 2, "metric": "eval_loss", "mode": "min",
                           "space": {"lora.r": {"choice": [8, 16]}}}}
    raise ValueError(kind)


def _sim_trials(kind: str, rng: np.random.Generator) -> list[dict]:
    """Trial parameter sets, the simulated final loss, and when (if ever) ASHA stops / the trial fails."""
    out = []
    if kind == "grid":
        for r in (4, 8, 16):
            for lr in (1e-4, 3e-4):
                for seed in (0, 1, 2):
                    loss = 1.60 - 0.06 * math.log2(r / 4) - 0.05 * (lr == 3e-4) + rng.normal(0, 0.01)
                    out.append({"params": {"lora.r": r, "lora.alpha": 2 * r, "train.lr": lr, "train.seed": seed},
                                "final": loss, "seed": seed})
        # Deterministic "ASHA": the weakest configuration is cut at rung 2 / 4; one trial runs out of memory.
        out[1]["stop"], out[2]["stop"], out[5]["stop"] = 2, 2, 4
        out[14]["error"] = 3
    elif kind == "optuna":
        for _ in range(16):
            lr = float(10 ** rng.uniform(-5, -3))
            r = int(rng.choice([4, 8, 16, 32]))
            dropout = float(rng.uniform(0, 0.2))
            strat = str(rng.choice(["random", "first"]))
            loss = (1.5 + 0.08 * (math.log10(lr) + 3.5) ** 2 - 0.03 * math.log2(r / 4) + 0.05 * (strat == "first")
                    + 0.1 * dropout + rng.normal(0, 0.01))
            out.append({"params": {"train.lr": lr, "lora.r": r, "lora.dropout": dropout, "selection.strategy": strat},
                        "final": loss, "seed": 0})
        worst = sorted(range(16), key=lambda i: -out[i]["final"])
        for i in worst[:4]:
            out[i]["stop"] = 2
        out[worst[4]]["stop"] = 4
    else:
        for r, loss in ((8, 1.55), (16, 1.52)):
            out.append({"params": {"lora.r": r}, "final": loss, "seed": 0})
    return out


def write_simulated_sweep(root: Path, kind: str = "grid", wandb: bool = False) -> Path:
    """Write a simulated sweep directory under root; return it. Deterministic (seeded numpy)."""
    cfg = _dump(_sim_spec(kind))
    cfg["wandb"]["enabled"] = wandb
    run_dir = root / cfg["name"]
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    dump = {**cfg, "command": f"python -m harness.sweep sweeps/{cfg['name']}.yaml output.dir={root}"}
    (run_dir / "sweep.yaml").write_text(yaml.safe_dump(dump, sort_keys=False))
    rng = np.random.default_rng(0)
    evals_per_epoch = cfg["train"]["evals_per_epoch"]
    reports = cfg["train"]["epochs"] * evals_per_epoch
    searched = list(cfg["search"]["space"])
    if kind == "grid":
        searched.append("train.seed")
    rows = []
    for i, t in enumerate(_sim_trials(kind, rng)):
        tid = f"sim{i:05d}"
        tdir = run_dir / "trials" / tid
        tdir.mkdir(parents=True)
        full = json.loads(json.dumps(cfg))
        for path, v in t["params"].items():
            sec, key = path.split(".")
            full[sec][key] = v
        (tdir / "config.json").write_text(json.dumps(full, indent=2))
        r = t["params"].get("lora.r", 8)
        last_it = t.get("stop") or t.get("error") or reports
        sec_per_report = 12.0 * (1 + r / 32)
        hist = []
        for it in range(1, last_it + 1):
            # Loss decays from 2.4 toward the final value; small train/eval gap.
            eval_loss = t["final"] + (2.4 - t["final"]) * math.exp(-it / 2.0) + 0.003 * rng.standard_normal()
            hist.append({"training_iteration": it, "step": it * 25, "epoch": it / evals_per_epoch,
                         "tokens_seen": it * 12_800, "eval_loss": eval_loss, "train_loss": eval_loss - 0.05,
                         "tokens_per_second": 12_800 / sec_per_report, "lr": 2e-4,
                         "time_total_s": 5.0 + it * sec_per_report})
        (tdir / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
        status = "ERROR" if "error" in t else ("EARLY_STOPPED" if "stop" in t else "TERMINATED")
        last = hist[-1]
        row = {"trial_id": tid, "status": status, "stopped_early": str(status == "EARLY_STOPPED").lower(),
               "error": "torch.OutOfMemoryError: CUDA out of memory (simulated)" if status == "ERROR" else "",
               "node_id": "sim-node", "seed": t["seed"]}
        row.update({f"config/{p}": t["params"][p] for p in searched})
        row.update({"eval_loss": last["eval_loss"], "best_eval_loss": min(h["eval_loss"] for h in hist),
                    "eval_perplexity": math.exp(last["eval_loss"]), "train_loss": last["train_loss"]})
        if cfg["eval"]["perplexity"]:  # end-of-trial evaluation: only trials that ran to the end
            row["ppl_test"] = 1.1 * math.exp(last["eval_loss"]) if status == "TERMINATED" else ""
        row.update({"train_seconds": last["time_total_s"] - 5.0, "tokens_seen": last["tokens_seen"],
                    "train_tokens": 6400, "n_examples": 100,
                    "trainable_params": r * 2 * 576 * 30 * 7, "tokens_per_second": last["tokens_per_second"]})
        if status == "ERROR":
            for k in ("eval_loss", "best_eval_loss", "eval_perplexity", "train_loss"):
                row[k] = ""
        rows.append(row)
    with open(run_dir / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    best = min((r for r in rows if r["status"] != "ERROR"), key=lambda r: r["eval_loss"])
    (run_dir / "best.yaml").write_text(yaml.safe_dump({"trial_id": best["trial_id"], "metric": "eval_loss",
                                                       "value": best["eval_loss"]}))
    return run_dir
