"""The driver's local Ray dies with the driver, even a driver killed with kill -9.

Ray ties its GCS and raylet to the driver that started them (PR_SET_PDEATHSIG), but not the dashboard
and runtime-env agents the raylet starts: after the raylet dies they each wait up to 60 s trying to tell
the (dead) GCS about it (measured 20-70 s after a kill -9 of the driver, Ray 2.60). So the driver starts
this small watcher first (`watch()`): it notes the driver's Ray processes every second, and when the
driver's end closes the pipe between them (however the driver ended), it kills the ones still there.
Only Ray's processes are touched (by command line), each checked by its start time, so a reused pid is
never killed.

    python -m harness.reaper DRIVER_PID   (stdin: the pipe; run by watch(), not by hand)
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
from typing import Any

POLL_S = 1.0
_watcher: subprocess.Popen | None = None  # the driver keeps the pipe's write end open until it exits


def is_ray_process(cmdline: list[str], name: str) -> bool:
    """gcs_server, raylet, the agents, log monitor and workers (`ray::...`) of a local Ray instance."""
    text = " ".join(cmdline)
    return name in ("gcs_server", "raylet") or text.startswith("ray::") or "/ray/" in text or "ray/core/src" in text


def ray_descendants(pid: int) -> dict[int, float]:
    """{pid: start time} of the Ray processes below `pid`."""
    import psutil

    found = {}
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return found
    for child in children:
        try:
            if child.pid != os.getpid() and is_ray_process(child.cmdline(), child.name()):
                found[child.pid] = child.create_time()
        except psutil.Error:
            continue
    return found


def reap(seen: dict[int, float]) -> int:
    """Kill the processes of `seen` that still run (same pid, same start time); returns how many."""
    import psutil

    killed = []
    for pid, started in seen.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - started) < 0.01:
                proc.kill()
                killed.append(proc)
        except psutil.Error:
            continue
    psutil.wait_procs(killed, timeout=5)
    return len(killed)


def main(driver_pid: int) -> None:
    seen: dict[int, float] = {}
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], POLL_S)
        if ready and not os.read(sys.stdin.fileno(), 1024):  # EOF: the driver is gone
            break
        seen.update(ray_descendants(driver_pid))
    reap(seen)


def watch() -> Any:
    """Start the watcher for this process (once per process); returns it."""
    global _watcher
    if _watcher is None or _watcher.poll() is not None:
        # A session of its own: a Ctrl-C or a kill of the driver's process group leaves it to do its job.
        _watcher = subprocess.Popen([sys.executable, "-m", "harness.reaper", str(os.getpid())],
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True, close_fds=True)
    return _watcher


if __name__ == "__main__":
    main(int(sys.argv[1]))
