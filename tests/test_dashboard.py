"""Every sweep is an Optuna study (harness/study.py) and `--dashboard` serves it with optuna-dashboard for the
sweep's lifetime (harness/dashboard.py): the page, rendered by a headless Chromium during a real smoke sweep,
lists the sweep's trials."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from conftest import REPO, read_csv, sweep_env
from test_validation import refused

from harness.dashboard import DEFAULT_PORT, argv_with_port

CHROMIUM = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render(url: str, screenshot: Path | None = None) -> str:
    """The page's DOM after its scripts ran (headless Chromium), and optionally a screenshot of it."""
    assert CHROMIUM, "no chromium: bash scripts/setup.sh --dev installs Debian's chromium package"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--virtual-time-budget=20000", "--window-size=1400,1000"]
    if screenshot is not None:
        subprocess.run([*base, f"--screenshot={screenshot}", url], capture_output=True, timeout=180, check=True)
    return subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout


def test_dashboard_takes_an_optional_port():
    assert argv_with_port(["s.yaml", "--dashboard"]) == ["s.yaml", f"--dashboard={DEFAULT_PORT}"]
    assert argv_with_port(["s.yaml", "--dashboard", "lora.r=4"]) == ["s.yaml", f"--dashboard={DEFAULT_PORT}",
                                                                     "lora.r=4"]
    assert argv_with_port(["s.yaml", "--dashboard", "9000"]) == ["s.yaml", "--dashboard", "9000"]


def test_a_busy_dashboard_port_is_refused_before_anything_starts(tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        err = refused(["sweeps/smoke.yaml", f"output.dir={tmp_path}", "--dashboard", str(port)], capsys)
    assert len(err) == 1 and err[0].startswith(f"error: --dashboard: 127.0.0.1:{port} is not free")
    assert err[0].endswith("give another port: --dashboard PORT")
    assert not list(tmp_path.iterdir())


def _lines(proc: subprocess.Popen, out: list[str]) -> threading.Thread:
    def read() -> None:
        for line in proc.stdout:
            out.append(line)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return t


def _wait_for_address(proc: subprocess.Popen, out: list[str], timeout: float = 600) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        found = [m.group(1) for ln in out if (m := re.match(r"dashboard: (http://127\.0\.0\.1:\d+/dashboard/)", ln))]
        if found:
            return found[0]
        time.sleep(1)
    raise AssertionError("no dashboard address printed:\n" + "".join(out)[-3000:])


@pytest.mark.slow
def test_the_dashboard_lists_a_grid_sweeps_trials_while_it_runs(tmp_path):
    port = free_port()
    out: list[str] = []
    cmd = [sys.executable, "-m", "harness.sweep", "sweeps/smoke.yaml", f"output.dir={tmp_path}", "--no-report",
           "--dashboard", str(port), "search.algorithm=grid", "search.num_samples=1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=sweep_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    reader = _lines(proc, out)
    try:
        address = _wait_for_address(proc, out)
        assert address == f"http://127.0.0.1:{port}/dashboard/"
        page = f"{address}studies/1/trials?numbers=0,1,2"
        seen, ids = "", set()
        while proc.poll() is None:  # until the page lists every trial of the sweep (3) while it runs
            rows = read_csv(tmp_path / "smoke" / "results.csv", missing_ok=True)
            ids = {r["trial_id"] for r in rows}
            seen = render(page)
            if len(ids) == 3 and all(f"Trial {k}" in seen for k in range(3)) and all(i in seen for i in ids):
                break
        live = proc.poll() is None
        shot = Path(os.environ.get("HARNESS_DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
        if live:
            render(f"{address}studies/1", screenshot=shot)
        proc.wait(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
    log = "".join(out)
    assert proc.returncode == 0, log[-3000:]
    assert live, "the sweep ended before the page listed its trials; last page:\n" + seen[-2000:]
    assert len(ids) == 3 and all(i in seen for i in ids)
    assert shot.stat().st_size > 10_000
    with pytest.raises(OSError):  # stopped with the sweep
        urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5)
    check_study(tmp_path / "smoke")


def check_study(run_dir: Path) -> None:
    """The study holds every trial of results.csv: Ray's id, its status, its objective at each report."""
    rows = {r["trial_id"]: r for r in read_csv(run_dir / "results.csv")}
    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    trials = {t.user_attrs["trial_id"]: t for t in study.get_trials()}
    assert set(trials) == set(rows)
    states = {"TERMINATED": "COMPLETE", "EARLY_STOPPED": "PRUNED", "ERROR": "FAIL"}
    for tid, t in trials.items():
        row = rows[tid]
        assert t.user_attrs["status"] == row["status"] and t.state.name == states[row["status"]]
        assert t.params["lora.r"] == int(row["config/lora.r"])
        assert float(t.user_attrs["tokens_seen"]) == float(row["tokens_seen"])
        history = [json.loads(ln) for ln in (run_dir / "trials" / tid / "metrics.jsonl").read_text().splitlines()]
        assert t.intermediate_values == {h["report"]: pytest.approx(h["eval_loss"]) for h in history}
        if row["status"] == "TERMINATED":
            assert t.value == pytest.approx(float(row["eval_loss"]))



def test_a_grid_sweeps_trials_are_recorded_with_state_status_and_reports(tmp_path):
    """StudyRecorder on Ray's own Trial objects and a real Optuna storage, without a sweep: finished,
    stopped-early and failed trials, and a resumed driver that finds its trials again."""
    from ray.tune.experiment import Trial

    from harness.config import load_sweep
    from harness.results import ResultsWriter
    from harness.study import StudyRecorder

    cfg, _ = load_sweep("sweeps/smoke.yaml", ["search.algorithm=grid", "search.num_samples=1"])
    base = cfg.model_dump(mode="json")
    writer = ResultsWriter(tmp_path, ["lora.r", "lora.alpha"], [], 4, base)
    rec = StudyRecorder(tmp_path / "optuna.db", "smoke", cfg.search, writer)
    trials = [Trial("fn", config={"lora.r": r}, trial_id=f"abc_0000{i}", stub=True) for i, r in enumerate((4, 8, 16))]
    for t in trials:
        t.set_status(Trial.RUNNING)
        writer.on_trial_start(0, trials, t)
        rec.on_trial_start(0, trials, t)
    for t, last in zip(trials, (4, 2, 1), strict=True):
        for k in range(1, last + 1):
            result = {"eval_loss": 2.0 / k, "report": k, "step": k, "total_steps": 4, "training_iteration": k,
                      "tokens_seen": 100 * k, "done": False}
            t.update_last_result(result)
            writer.on_trial_result(0, trials, t, result)
            rec.on_trial_result(0, trials, t, result)
    writer.on_trial_complete(0, trials, trials[0])
    rec.on_trial_complete(0, trials, trials[0])
    writer.on_trial_complete(0, trials, trials[1])  # ASHA's stop: ended before its last step
    rec.on_trial_complete(0, trials, trials[1])
    trials[2].set_status(Trial.ERROR)
    rec.on_trial_error(0, trials, trials[2])

    study = optuna.load_study(study_name="smoke", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    got = {t.user_attrs["trial_id"]: t for t in study.get_trials()}
    assert [got[f"abc_0000{i}"].state.name for i in range(3)] == ["COMPLETE", "PRUNED", "FAIL"]
    assert [got[f"abc_0000{i}"].user_attrs["status"] for i in range(3)] == ["TERMINATED", "EARLY_STOPPED", "ERROR"]
    assert got["abc_00000"].value == pytest.approx(0.5) and got["abc_00000"].intermediate_values == {
        1: 2.0, 2: 1.0, 3: pytest.approx(2 / 3), 4: 0.5}
    assert got["abc_00001"].params == {"lora.r": 8} and got["abc_00001"].user_attrs["tied/lora.alpha"] == 16
    assert got["abc_00001"].user_attrs["report"] == "2/4" and got["abc_00001"].user_attrs["tokens_seen"] == 200
    # a resumed driver: a new recorder finds the records; --retry-errored's rerun of the failed trial is a new one
    again = StudyRecorder(tmp_path / "optuna.db", "smoke", cfg.search, writer)
    trials[2].set_status(Trial.RUNNING)
    assert again._id(trials[0]) == got["abc_00000"]._trial_id
    again.on_trial_start(0, trials, trials[2])
    assert len(study.get_trials()) == 4 and study.get_trials()[-1].user_attrs["trial_id"] == "abc_00002"


def test_an_optuna_searchers_trials_carry_rays_id_status_and_cost(tmp_path):
    """With search.algorithm optuna the study is the searcher's: ResumableOptunaSearch marks each trial it
    suggests with Ray's id, the recorder adds status and cost, the searcher tells the values."""
    from ray.tune.experiment import Trial

    from harness.config import load_sweep
    from harness.optuna_search import ResumableOptunaSearch
    from harness.results import ResultsWriter
    from harness.space import param_space
    from harness.study import StudyRecorder

    cfg, _ = load_sweep("sweeps/smoke.yaml", [])
    db = tmp_path / "optuna.db"
    searcher = ResumableOptunaSearch(space=param_space(cfg.search), metric="eval_loss", mode="min",
                                     storage=optuna.storages.RDBStorage(f"sqlite:///{db}"), study_name="smoke")
    writer = ResultsWriter(tmp_path, ["lora.r", "lora.alpha"], [], 4, cfg.model_dump(mode="json"))
    rec = StudyRecorder(db, "smoke", cfg.search, writer)
    t = Trial("fn", config=searcher.suggest("abc_00000"), trial_id="abc_00000", stub=True)
    t.set_status(Trial.RUNNING)
    writer.on_trial_start(0, [t], t)
    rec.on_trial_start(0, [t], t)
    for k in (1, 2, 3, 4):
        result = {"eval_loss": 2.0 / k, "report": k, "step": k, "total_steps": 4, "training_iteration": k,
                  "tokens_seen": 100 * k}
        t.update_last_result(result)
        searcher.on_trial_result("abc_00000", result)
        writer.on_trial_result(0, [t], t, result)
        rec.on_trial_result(0, [t], t, result)
    writer.on_trial_complete(0, [t], t)
    rec.on_trial_complete(0, [t], t)
    searcher.on_trial_complete("abc_00000", t.last_result)
    (got,) = optuna.load_study(study_name="smoke", storage=f"sqlite:///{db}").get_trials()
    assert got.user_attrs["trial_id"] == "abc_00000" and got.user_attrs["status"] == "TERMINATED"
    assert got.user_attrs["tokens_seen"] == 400 and got.user_attrs["report"] == "4/4"
    assert got.state.name == "COMPLETE" and got.value == pytest.approx(0.5) and len(got.intermediate_values) == 4
