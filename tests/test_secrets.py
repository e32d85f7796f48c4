"""Secrets never reach what a sweep writes, prints or hands to Ray and W&B (trainables/secrets.py).

The unit tests pin the masking itself; the slow test plants keys through every route a user or a
library can take (environment values, a key pasted into an override, into a searched value and into a
data file whose error message quotes it, the judge's own key variable) in a real sweep with real Ray and
W&B offline, and greps everything written: the run directory, the caches, Ray's session directory,
W&B's own directories and the console."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from helpers import PLANTED_SECRETS, REPO, leaks, read_csv, sweep_env, wandb_runs

from trainables.secrets import (
    REGISTERED,
    MaskedStream,
    expand,
    masked_exception,
    masking_errors,
    redact,
    redact_obj,
    register,
)

KEY = "sk-live-0123456789abcdef"
JUDGE_VAR, JUDGE_KEY = "MY_JUDGE_CRED", "judge-planted-cred-5b9e2f71"  # a name no pattern recognises


@pytest.fixture
def keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv(JUDGE_VAR, JUDGE_KEY)
    monkeypatch.setenv(REGISTERED, "")  # restored afterwards: register() writes it
    register(JUDGE_VAR)


def test_a_masked_value_is_a_reference_and_stays_a_string_in_yaml_json_and_csv(keys):
    doc = {"wandb": {"project": KEY}, "description": f"question {JUDGE_KEY}", "n": 3}
    masked = redact_obj(doc)
    assert masked == {"wandb": {"project": "${OPENAI_API_KEY}"}, "description": "question ${MY_JUDGE_CRED}", "n": 3}
    # `project: ***` was a YAML alias (the report failed, --resume crashed): masked text loads as the masks.
    assert yaml.safe_load(yaml.safe_dump(masked)) == masked
    assert yaml.safe_load(redact(yaml.safe_dump(doc))) == masked
    assert json.loads(redact(json.dumps(doc))) == masked
    assert expand(masked) == doc  # what a trial resolves again from its environment
    assert expand("${HOME} ${NOT_SET_TOKEN}") == "${HOME} ${NOT_SET_TOKEN}"  # only secret variables that are set


def test_a_registered_variable_is_secret_in_every_process_started_later(keys):
    child = subprocess.run([sys.executable, "-c", f"from trainables.secrets import redact; print(redact({JUDGE_KEY!r}))"],
                           capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.stdout.strip() == "${MY_JUDGE_CRED}", child.stderr


def test_every_writer_and_the_console_mask(keys, tmp_path, capsys):
    from trainables.paths import atomic_write_text

    atomic_write_text(tmp_path / "x.txt", f"key={KEY}")
    assert (tmp_path / "x.txt").read_text() == "key=${OPENAI_API_KEY}"
    out = MaskedStream(sys.stdout)
    out.write(f"error: {JUDGE_KEY}\n")
    assert capsys.readouterr().out == "error: ${MY_JUDGE_CRED}\n"


class HTTPError(Exception):
    """Like an SDK's error: a message, and the request (with its Authorization header) as an attribute."""

    def __init__(self, message: str, headers: dict):
        super().__init__(message)
        self.headers = headers


def test_an_exception_leaves_a_trial_masked_and_any_other_untouched(keys):
    @masking_errors
    def trial(kind: str) -> None:
        if kind == "plain":
            raise FloatingPointError("loss became NaN/inf at step 1; lower train.lr")
        try:
            raise OSError(2, "No such file", f"/data/{JUDGE_KEY}/x.json")
        except OSError as e:
            if kind == "chained":
                raise ValueError(f"data.train: {KEY} is not a file") from e
            raise HTTPError("401 unauthorized", {"Authorization": f"Bearer {KEY}"}) from None

    plain = pytest.raises(FloatingPointError, trial, "plain").value
    assert str(plain) == "loss became NaN/inf at step 1; lower train.lr" and plain.__context__ is None

    chained = pytest.raises(ValueError, trial, "chained").value
    assert str(chained) == "data.train: ${OPENAI_API_KEY} is not a file"
    assert isinstance(chained.__cause__, FileNotFoundError)
    assert str(chained.__cause__) == "[Errno 2] No such file: '/data/${MY_JUDGE_CRED}/x.json'"
    assert chained.__traceback__.tb_next is not None  # where it was raised is kept

    http = pytest.raises(Exception, trial, "http").value  # noqa: B017 - a stand-in class, named like HTTPError
    assert type(http).__name__ == "HTTPError" and str(http) == "401 unauthorized"  # a stand-in: no headers
    from ray import cloudpickle  # what Ray keeps as error.pkl

    for e in (chained, http):
        assert KEY.encode() not in cloudpickle.dumps(e) and JUDGE_KEY.encode() not in cloudpickle.dumps(e)
    assert pickle.loads(cloudpickle.dumps(chained)).args == chained.args
    assert masked_exception(plain).args == plain.args


def test_a_trial_computes_with_the_values_the_driver_masked(keys):
    from harness.config import SweepConfig
    from trainables.schema import trial_config

    cfg = SweepConfig.model_validate({"name": "t", "description": f"q {KEY}", "wandb": {"project": JUDGE_KEY},
                                      "search": {"space": {"description": {"choice": [f"a {KEY}", "b"]}}}})
    masked = redact_obj(cfg.model_dump(mode="json"))
    assert KEY not in json.dumps(masked) and JUDGE_KEY not in json.dumps(masked)
    assert trial_config(masked, redact_obj({"description": f"a {KEY}"})) == cfg.model_copy(update={"description": f"a {KEY}"})


def test_a_key_in_a_path_is_refused(keys, capsys):
    from harness.sweep import main

    with pytest.raises(SystemExit) as e:
        main(["sweeps/smoke.yaml", f"output.dir=/tmp/{KEY}", "--dry-run"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "error: output.dir: '/tmp/${OPENAI_API_KEY}' holds the value of a secret environment variable" in err
    assert KEY not in err


# ----------------------------------------------------------------------------- a real sweep


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A 2-trial sweep with keys planted through every route, then `--resume` of it. Ray's temp dir,
    every temp file, the harness cache and W&B's directories are the test's own, to be searched."""
    from trainables.models import resolve_model

    root = Path(tempfile.mkdtemp(prefix="sec", dir="/tmp"))  # short: Ray's sockets live under RAY_TMPDIR
    (root / "tmp").mkdir()
    (root / "cache" / "models").mkdir(parents=True)
    model = Path(resolve_model("smollm2-135m-instruct"))  # converted once; linked, not copied or searched
    (root / "cache" / "models" / model.name).symlink_to(model)
    secrets = {**PLANTED_SECRETS, JUDGE_VAR: JUDGE_KEY}
    bad = tmp_path_factory.mktemp("data") / JUDGE_KEY / "bad.json"  # a searched path holding a key ...
    bad.parent.mkdir(parents=True)
    # ... to a file whose error message quotes keys: raised inside the trial, recorded by Ray
    bad.write_text(json.dumps({PLANTED_SECRETS["WANDB_API_KEY"]: 1, PLANTED_SECRETS["AWS_SECRET_ACCESS_KEY"]: 2,
                               JUDGE_KEY: 3}))
    env = sweep_env(**{JUDGE_VAR: JUDGE_KEY}, RAY_TMPDIR=str(root / "tmp"), TMPDIR=str(root / "tmp"),
                    HARNESS_CACHE_DIR=str(root / "cache"), WANDB_CONFIG_DIR=str(root / "wandb-config"),
                    WANDB_CACHE_DIR=str(root / "wandb-cache"), WANDB_DATA_DIR=str(root / "wandb-data"))
    args = ["sweeps/smoke.yaml", f"output.dir={root / 'runs'}", "name=planted", "data.train=alpaca/alpaca_en_demo.json",
            "data.eval_size=4", "selection.n=8", "train.batch_size=2", "train.max_seq_len=128", "scheduler.type=fifo",
            "search.algorithm=grid", "search.num_samples=1", "recovery.max_failures=0",
            f"search.space={{data.train: {{grid: [alpaca/alpaca_en_demo.json, {bad}]}}}}",
            f"wandb.project={PLANTED_SECRETS['OPENAI_API_KEY']}", f"description=question {PLANTED_SECRETS['HF_TOKEN']} "
            f"and {JUDGE_KEY}", f"eval.judge.api_key_env={JUDGE_VAR}"]
    runs = [subprocess.run([sys.executable, "-m", "harness.sweep", *args, *extra], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=900) for extra in ([], ["--resume"])]
    (root / "console.txt").write_text("".join(r.stdout + r.stderr for r in runs))
    yield {"root": root, "run_dir": root / "runs" / "planted", "runs": runs, "secrets": secrets, "bad": bad}
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_planted_keys_reach_no_file_no_name_and_no_console(planted):
    root, run_dir = planted["root"], planted["run_dir"]
    first, resumed = planted["runs"]
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # The routes were taken: the keys went into the config, the trial's exception, Ray's and W&B's records.
    rows = {r["config/data.train"]: r for r in read_csv(run_dir / "results.csv")}
    bad = rows[str(planted["bad"]).replace(JUDGE_KEY, "${MY_JUDGE_CRED}")]  # found: the trial resolved the mask
    assert bad["status"] == "ERROR" and "unrecognised row with fields" in bad["error"]
    assert all(m in bad["error"] for m in ("${WANDB_API_KEY}", "${AWS_SECRET_ACCESS_KEY}", "${MY_JUDGE_CRED}"))
    assert rows["alpaca/alpaca_en_demo.json"]["status"] == "TERMINATED"
    ray_errors = list((run_dir / "tune").glob("*/error.txt"))
    assert ray_errors and all("${AWS_SECRET_ACCESS_KEY}" in p.read_text() for p in ray_errors)  # masked in the trial
    assert (run_dir / "tune" / "tuner.pkl").exists() and (run_dir / "report" / "report.md").exists()
    assert any(b"${OPENAI_API_KEY}" in p.read_bytes() for p in (run_dir / "wandb").glob("*/*.wandb"))  # the project
    runs = wandb_runs(run_dir)  # each trial's run, and the report's
    assert {path: runs[r["trial_id"]]["config"]["data.train"] for path, r in rows.items()} == {p: p for p in rows}
    sessions = list((root / "tmp" / "ray").glob("session_2*"))
    assert sessions and all((s / "logs" / "runtime_env_agent.log").exists() for s in sessions)
    assert len(sessions) == 2  # the sweep's and the resume's own Ray
    # ... and nothing anywhere holds one: run dir (results, configs, error texts, Ray's state, tuner.pkl,
    # W&B runs and logs, report), caches, Ray's session dirs (logs, staging copies), temp files, console.
    assert leaks([root], planted["secrets"]) == []
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]


@pytest.mark.slow
def test_a_sweep_with_a_key_in_its_config_writes_valid_files_and_resumes(planted):
    run_dir = planted["run_dir"]
    saved = yaml.safe_load((run_dir / "sweep.yaml").read_text())
    assert saved["description"] == "question ${HF_TOKEN} and ${MY_JUDGE_CRED}"
    assert saved["wandb"]["project"] == "${OPENAI_API_KEY}" and "${OPENAI_API_KEY}" in saved["command"]
    best = yaml.safe_load((run_dir / "best.yaml").read_text())
    assert best["config"]["wandb"]["project"] == "${OPENAI_API_KEY}"
    for config in (run_dir / "trials").glob("*/config.json"):
        assert json.loads(config.read_text())["description"] == saved["description"]
    resumed = planted["runs"][1]
    assert "holds a different sweep" not in resumed.stderr
    assert len(read_csv(run_dir / "results.csv")) == 2  # nothing ran twice
