"""eval.judge.serve: the driver starts llama.cpp's OpenAI-compatible server for the sweep's judge.

The server (`python -m llama_cpp.server`, from llama-cpp-python[server]) runs on a free 127.0.0.1 port
with the GGUF named by `serve` ('embedded': the embedded SmolLM2 GGUF), under the alias that
eval.judge.model names. The driver waits until /v1/models answers, then gives the trials the URL.

It never outlives the driver: it is stopped at the driver's exit (atexit: the end of the sweep, an error,
Ctrl-C, which reaches only the driver since the server has a session of its own), and the kernel kills
it when the driver dies any other way (kill -9: PR_SET_PDEATHSIG, set in the child before it runs).
--resume starts a new one (the port is chosen afresh; sweep.yaml keeps the SERVED_URL placeholder).
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

INSTALL = "pip install 'llama-cpp-python[server]' (or .ci/install_llama_server.sh: a CPU build, ~5 min)"
START_TIMEOUT_S = 180.0
N_CTX = 4096  # question + answer + reference + verdict of the judge prompts


def served(judge: Any, searched: bool) -> bool:
    """Whether this sweep's judge is one the driver starts."""
    return bool(judge.serve) and (judge.enabled or searched)


def gguf_of(serve: str) -> Path:
    """The GGUF file `serve` names; ValueError naming the field and the fix."""
    if serve == "embedded":
        from trainables.models import EMBEDDED, ModelNotFound, _gguf_path

        try:
            return _gguf_path(next(iter(EMBEDDED)))
        except ModelNotFound as e:
            raise ValueError(str(e).replace("model.name:", "eval.judge.serve:", 1)) from None
    path = Path(serve).expanduser()
    if not path.is_file():
        raise ValueError(f"eval.judge.serve: {serve} is not a file; give a .gguf path or 'embedded'")
    return path.resolve()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the driver dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: atexit still stops it on every ordinary exit
        pass


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/models", timeout=2) as r:
            return r.status == 200 and "data" in json.loads(r.read() or b"{}")
    except (OSError, ValueError):
        return False


class JudgeServer:
    """One llama.cpp server process; `url` is its OpenAI base URL."""

    def __init__(self, gguf: Path, alias: str, log_path: Path, threads: int):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(N_CTX), "--n_threads", str(threads),
               "--model_alias", alias]
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log:  # a file, not a pipe: its request logs would fill a pipe
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, preexec_fn=_die_with_parent)

    def wait(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until it answers; RuntimeError with its log's tail if it exits or takes longer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = " | ".join(self.log_path.read_text(errors="replace").strip().splitlines()[-3:])
                raise RuntimeError(f"eval.judge.serve: the llama.cpp server exited ({self.proc.returncode}): "
                                   f"{tail} (full log: {self.log_path})")
            if _answers(self.url):
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"eval.judge.serve: the llama.cpp server did not answer in {timeout:.0f} s "
                           f"(log: {self.log_path})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def start_judge(cfg: Any, base: dict[str, Any]) -> dict[str, Any]:
    """The driver's hook: when eval.judge.serve applies, start the server (stopped at exit) and return
    `base` with eval.judge.base_url pointing at it; else `base` unchanged. Problems are a ConfigError (exit 2, one line)."""
    space = cfg.search.space or {}
    if not served(cfg.eval.judge, "eval.judge.enabled" in space):
        return base
    from harness.config import ConfigError

    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        raise ConfigError([f"eval.judge.serve: llama.cpp's server is not installed; {INSTALL}"])
    try:
        gguf = gguf_of(cfg.eval.judge.serve)
    except ValueError as e:
        raise ConfigError([str(e)]) from e
    threads = max(1, min(4, (os.cpu_count() or 2) // 2))
    server = JudgeServer(gguf, cfg.eval.judge.model, cfg.run_dir / "judge_server.log", threads)
    atexit.register(server.stop)
    print(f"judge: starting llama.cpp on {server.url} with {gguf.name} (log: {server.log_path})...")
    try:
        server.wait()
    except RuntimeError as e:
        raise ConfigError([str(e)]) from e
    judge = {**base["eval"]["judge"], "base_url": server.url}
    return {**base, "eval": {**base["eval"], "judge": judge}}
