"""eval.judge.serve: the driver starts a real llama.cpp server for the sweep's judge, points the trials at
it, and leaves no server behind (normal end, kill -9 of the driver); --resume starts a new one."""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.config import SweepConfig
from harness.judge_server import start_judge
from trainables.schema.eval import SERVED_URL, JudgeConfig

REPO = Path(__file__).resolve().parent.parent
TINY = ["eval.generate.limit=2", "eval.generate.max_new_tokens=4", "eval.judge.max_tokens=24",
        "search.space={eval.generate.temperature: {grid: [0.0]}}", "eval.judge.serve=embedded", "--no-report"]


def _cfg(tmp_path: Path, **judge) -> SweepConfig:
    return SweepConfig.model_validate({"name": "j", "output": {"dir": str(tmp_path)},
                                       "eval": {"generate": {"data": "eval/evol_instruct_gt.json"},
                                                "judge": {"enabled": True, **judge}}})


def test_served_judge_config_and_a_hosted_one_starts_nothing(tmp_path):
    j = JudgeConfig(enabled=True, serve="embedded")
    assert (j.base_url, j.model, j.price_prompt_per_mtok) == (SERVED_URL, "judge", 0.0)
    hosted = JudgeConfig(enabled=True, serve="embedded", base_url="https://api.openai.com/v1")
    assert hosted.serve is None and hosted.model == "gpt-4o-mini"  # the course's judge: one override
    cfg = _cfg(tmp_path, base_url="https://api.openai.com/v1", serve="embedded")
    base = cfg.model_dump(mode="json")
    assert start_judge(cfg, base) is base and not list(tmp_path.rglob("judge_server.log"))
    with pytest.raises(ValueError, match="neither 'embedded' nor a .gguf"):
        JudgeConfig(serve="smollm2")


def test_missing_llama_cpp_is_one_line_naming_the_install(tmp_path, monkeypatch):
    from harness.config import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    with pytest.raises(ConfigError) as e:  # main() prints each problem as one line and exits 2
        start_judge(_cfg(tmp_path, serve="embedded"), {})
    (err,) = e.value.problems
    assert "eval.judge.serve" in err and "pip install 'llama-cpp-python[server]'" in err and "\n" not in err


def _servers(port: int) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "llama_cpp.server" in cmd and str(port) in cmd:
            out.append(p)
    return out


def _gone(port: int, within: float = 30.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not _servers(port):
            return True
        time.sleep(0.5)
    return False


def _port(log: Path) -> int | None:
    m = re.search(r"judge: starting llama.cpp on http://127.0.0.1:(\d+)/v1", log.read_text(errors="replace"))
    return int(m.group(1)) if m else None


def test_driver_serves_the_judge_leaves_no_orphan_and_resume_starts_a_new_one(tmp_path):
    from conftest import read_csv, sweep_env

    if importlib.util.find_spec("llama_cpp") is None:
        pytest.fail("llama-cpp-python[server] not installed; run .ci/install_llama_server.sh")
    cmd = [sys.executable, "-m", "harness.sweep", "sweeps/decoding.yaml", f"output.dir={tmp_path}", "name=srv",
           *TINY]
    log = tmp_path / "driver.log"
    with log.open("w") as f:
        driver = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, env=sweep_env())
    # kill -9 the driver once its trial runs: the server must not outlive it
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not list((tmp_path / "srv").glob("trials/*")):
        assert driver.poll() is None, log.read_text()[-3000:]
        time.sleep(0.5)
    first = _port(log)
    assert first and _servers(first), log.read_text()[-3000:]
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert _gone(first), f"llama.cpp server on {first} outlived the killed driver"

    again = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True, env=sweep_env(),
                           timeout=600)
    out = again.stdout + again.stderr
    assert again.returncode == 0, out[-3000:]
    second = re.search(r"judge: starting llama.cpp on http://127.0.0.1:(\d+)/v1", out)
    assert second, out[-3000:]
    row, = read_csv(tmp_path / "srv" / "results.csv")
    assert row["status"] == "TERMINATED" and 1 <= float(row["judge_score"]) <= 10, row
    assert _gone(int(second.group(1)), within=15), "the server outlived the sweep"
    recorded = (tmp_path / "srv" / "sweep.yaml").read_text()  # the sweep as configured: no started server's port
    assert f"127.0.0.1:{first}/" not in recorded and f"127.0.0.1:{second.group(1)}/" not in recorded
