"""harness/lock.py with real processes: a run directory is owned by one live driver; another is refused
naming it; an owner killed with SIGKILL leaves nothing stuck. (Two real drivers on one directory:
tests/test_reliability.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from helpers import REPO

from harness.lock import LOCK_NAME, _try_exclusive_file, busy_message, owner_alive, read_owner

HOLD = ("import sys, time\nfrom harness.lock import hold\nhold(sys.argv[1])\nprint('held', flush=True)\n"
        "time.sleep(600)")
TRY = ("import os, sys\nfrom harness.lock import RunDirBusy, hold\ntry:\n    hold(sys.argv[1])\n"
       "    print('taken by', os.getpid())\nexcept RunDirBusy as e:\n    print(e)")


def holder(run_dir) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def contend(run_dir) -> tuple[str, float]:
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", TRY, str(run_dir)], cwd=REPO, capture_output=True, text=True,
                         timeout=120).stdout.strip()
    return out, time.monotonic() - t0


def test_a_second_process_is_refused_naming_the_live_owner(tmp_path):
    run_dir = tmp_path / "run"
    owner = holder(run_dir)
    try:
        said, _ = contend(run_dir)
        recorded = read_owner(run_dir / LOCK_NAME)
        assert recorded["pid"] == owner.pid and recorded["host"] == socket.gethostname()
        assert said == busy_message(run_dir, recorded)
        assert said.startswith(f"output.dir: {run_dir} is in use by another driver (pid {owner.pid} on "
                               f"{socket.gethostname()}, running since ")
        assert said.endswith(f"wait for it to finish, or stop it (kill {owner.pid}) and continue with --resume")
    finally:
        owner.kill()
        owner.wait()


def test_an_owner_killed_with_sigkill_leaves_nothing_stuck(tmp_path):
    run_dir = tmp_path / "run"
    owner = holder(run_dir)
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    said, _ = contend(run_dir)
    assert said.startswith("taken by ")
    assert read_owner(run_dir / LOCK_NAME)["pid"] == int(said.split()[-1])


def test_without_flock_the_owner_in_the_file_decides(tmp_path):
    """Where the filesystem has no flock, the lock is the file itself: a live owner keeps it, a dead one
    (its pid gone, or reused by a process started at another time) does not."""
    path = tmp_path / LOCK_NAME
    live = holder(tmp_path / "other")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    try:
        for owner, taken in ((dict(me, pid=live.pid), False), (dict(me, pid=dead.pid), True),
                             (dict(me, process_start=1.0), True), ({"host": "elsewhere", "pid": 1}, False)):
            path.write_text(json.dumps(owner))
            fd = _try_exclusive_file(path)
            assert (fd is not None) == taken == (not owner_alive(owner)), owner
            if fd is not None:
                os.close(fd)
    finally:
        live.kill()
        live.wait()


def test_a_driver_that_looked_before_the_directory_existed_names_the_one_that_made_it(tmp_path):
    """Two drivers started at once on a new run directory: neither takes the lock first thing (there is no
    directory yet); the one that goes on makes it, takes it and writes sweep.yaml. The other then finds
    that sweep.yaml: it says the directory is in use, naming the first (before: "holds an unfinished run of
    this sweep; add --resume", seen under load), and leaves the directory as it was."""
    from harness.config import ConfigError
    from harness.preflight import load_config
    from harness.rundir import claim_run_dir

    cfg = load_config(str(REPO / "sweeps/smoke.yaml"), [f"output.dir={tmp_path}"])
    owner = holder(cfg.run_dir)
    try:
        (cfg.run_dir / "sweep.yaml").write_text(yaml_of(cfg))
        with pytest.raises(ConfigError) as refused:
            claim_run_dir(cfg, False, 3)
        said = str(refused.value)
        assert f"is in use by another driver (pid {owner.pid} on " in said, said
        assert sorted(p.name for p in cfg.run_dir.iterdir()) == [LOCK_NAME, "sweep.yaml"]
        assert read_owner(cfg.run_dir / LOCK_NAME)["pid"] == owner.pid
    finally:
        owner.kill()
        owner.wait()


def yaml_of(cfg) -> str:
    import yaml

    return yaml.safe_dump(cfg.model_dump(mode="json"))
