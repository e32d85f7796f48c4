"""`python -m harness.sweep FILE --dashboard [PORT]`: optuna-dashboard over the sweep's Optuna study
(harness/study.py records every trial there) on 127.0.0.1 for the lifetime of the driver: a child process
that the kernel stops with the driver (kill -9 included), started once its port answers; its address is
printed.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_PORT = 8080


def argv_with_port(argv: list[str]) -> list[str]:
    """`--dashboard` takes an optional port: give it the default when the next word is no port (an override
    such as lora.r=8, or the sweep file), so that argparse does not read that word as the port."""
    out = list(argv)
    for i, a in enumerate(out):
        if a == "--dashboard" and not (i + 1 < len(out) and out[i + 1].isdigit()):
            out[i] = f"--dashboard={DEFAULT_PORT}"
    return out


def port_problems(port: int | None) -> list[str]:
    """A port the dashboard cannot listen on, as a one-line error (checked before anything starts)."""
    if port is None:
        return []
    if not 1 <= port <= 65535:
        return [f"--dashboard: port {port} is out of range; give 1-65535"]
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            return [f"--dashboard: 127.0.0.1:{port} is not free ({e.strerror}); give another port: --dashboard PORT"]
    return []


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the driver goes, however it goes."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: atexit below still stops it on a normal exit
        pass


def start(port: int, db: Path, timeout_s: float = 60.0) -> subprocess.Popen:
    """optuna-dashboard on 127.0.0.1:port over db, answering before this returns; stopped at exit."""
    import atexit
    import urllib.request

    import optuna

    optuna.storages.RDBStorage(f"sqlite:///{db}")  # creates the tables the dashboard reads
    cmd = [sys.executable, "-c", "from optuna_dashboard._cli import main; main()", f"sqlite:///{db}",
           "--host", "127.0.0.1", "--port", str(port), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
    atexit.register(stop, proc)
    url = f"http://127.0.0.1:{port}/dashboard/"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5).read()
            print(f"dashboard: {url} (optuna-dashboard over {db}; stops with the sweep)", flush=True)
            return proc
        except OSError:
            time.sleep(0.5)
    err = proc.stderr.read().decode(errors="replace").strip().splitlines()[-1:] if proc.poll() is not None else []
    stop(proc)
    raise RuntimeError(f"optuna-dashboard did not answer on 127.0.0.1:{port}" + (f": {err[0]}" if err else ""))


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


