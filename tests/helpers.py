"""Test helpers shared by several test files (fixtures live in conftest.py): the repository root, a sweep
run as a subprocess with planted fake keys, its results.csv and W&B runs read back, filesystems that
are full or read-only, and a scripted OpenAI-compatible judge endpoint. Tests import them from here
(`from helpers import run_sweep`), never from another test module."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Fake keys in the environment of every test sweep: tests/test_reliability.py and tests/test_secrets.py
# check that none of them reaches any file a sweep writes (results, configs, logs, W&B runs, report).
PLANTED_SECRETS = {
    "OPENAI_API_KEY": "sk-planted-openai-4d1f0c9e7b2a58e3",
    "WANDB_API_KEY": "planted0wandb0key0a8f3e2d9c1b7a6e5f4d3c2b1a09",
    "HF_TOKEN": "hf_plantedHuggingFaceToken7c3e9a1f",
    "AWS_SECRET_ACCESS_KEY": "plantedAwsSecret/9f8e7d6c+5b4a3e2d",  # Ray Tune copies this one into runtime envs
}


def leaks(roots: list[Path], secrets: dict[str, str]) -> list[str]:
    """'NAME in PATH' for every planted value found in the bytes or the name of a file or directory
    under `roots` (symbolic links not followed: a cache may link the converted model)."""
    found = []
    for root in roots:
        for top, dirs, files in os.walk(root):
            for name in dirs + files:
                path = Path(top) / name
                data = path.read_bytes() if name in files and path.is_file() and not path.is_symlink() else b""
                found += [f"{key} in {path}" for key, value in secrets.items()
                          if value in str(path.relative_to(root)) or value.encode() in data]
    return found


def sweep_env(**extra: str) -> dict[str, str]:
    """The environment of a sweep subprocess: W&B offline, every Ray log line kept, the planted keys."""
    return {**os.environ, **PLANTED_SECRETS, "WANDB_MODE": "offline", "RAY_DEDUP_LOGS": "0", **extra}


def run_sweep(*args: str, timeout: int = 900, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m harness.sweep ARGS` in a subprocess, W&B offline, as a user would run it (with the
    planted fake API keys in its environment)."""
    return subprocess.run([sys.executable, "-m", "harness.sweep", *args], cwd=REPO, env=env or sweep_env(),
                          capture_output=True, text=True, timeout=timeout)


def read_csv(path: Path, missing_ok: bool = False) -> list[dict[str, str]]:
    """A sweep's results.csv as written, every value as text; `missing_ok`: no file yet reads as no rows."""
    if missing_ok and not path.exists():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _wandb_records(path: Path) -> list:
    """The records of an offline run's .wandb file: a LevelDB-style log (7-byte file header, 32 KiB
    blocks, each record chunk after a 7-byte header: crc, little-endian length, type), protobufs inside."""
    from wandb.proto.wandb_internal_pb2 import Record

    raw, pos, part, out = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(raw):
        if (left := 32768 - pos % 32768) < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = struct.unpack("<HB", raw[pos + 4:pos + 7])
        part, pos = part + raw[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            out.append(Record.FromString(part))
            part = b""
    return out


def _wandb_key(item) -> str:
    return item.key or ".".join(item.nested_key)  # W&B writes some keys as a one-part nested key


def wandb_runs(root: Path) -> dict[str, dict]:
    """trial id -> its offline W&B run under <root>/wandb: its config (set at start and updated), its
    group, and the eval_loss of its history in order."""
    found = {}
    for d in (root / "wandb").glob("offline-run-*"):
        run = found[d.name.rsplit("-", 1)[1]] = {"config": {}, "group": None, "eval_loss": []}
        for r in (r for f in d.glob("*.wandb") for r in _wandb_records(f)):
            if r.HasField("run"):
                run["group"] = r.run.run_group
            for item in r.run.config.update if r.HasField("run") else r.config.update:
                run["config"][_wandb_key(item)] = json.loads(item.value_json)
            run["eval_loss"] += [json.loads(i.value_json) for i in r.history.item if _wandb_key(i) == "eval_loss"]
    return found


@contextlib.contextmanager
def tmpfs(path: Path, size: str, read_only: bool = False) -> Iterator[Path]:
    """A real filesystem of `size` (e.g. "40m") mounted at `path` for the test (root, as CI runs); the test
    is skipped, saying why, only on a machine where mounting is impossible."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a filesystem on this machine ({proc.stderr.strip() or 'mount failed'}); the test "
                    "needs root (as CI has)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """A directory this process cannot write: a read-only mount as root (root writes through permissions),
    else one without write permission."""
    if os.geteuid() == 0:
        with tmpfs(path, "1m", read_only=True) as d:
            yield d
        return
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)


def schema_reply(schema: dict) -> str:
    """What a server that keeps to the schema answers: the scripted scores as the schema's JSON."""
    keys = list(schema["properties"])
    if keys == ["verdict"]:
        return json.dumps({"verdict": "A"})
    return json.dumps(dict(zip(keys, [9, 3][: len(keys)] if len(keys) == 2 else [7], strict=True)))


class Scripted(BaseHTTPRequestHandler):
    """Chat-completions endpoint whose behaviour the test sets on the server object."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):  # noqa: N802 - http.server's naming
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        rf = body.get("response_format")
        with srv.lock:
            for name, default in (("accepts", {"json_schema", "json_object"}), ("keeps_to", set()), ("formats", []),
                                  ("reply_for", {})):
                if not hasattr(srv, name):  # servers set up elsewhere (test_reliability.py) with the old fields
                    setattr(srv, name, default)
            srv.calls += 1
            n = srv.calls
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
            srv.auth.add(self.headers.get("Authorization", ""))
            srv.prompts.append(body["messages"][-1]["content"])
            srv.formats.append(rf["type"] if rf else "text")
        try:
            time.sleep(srv.delay)
            mode = srv.mode if n > srv.fail_first else "ok"
            if srv.fail_first and n <= srv.fail_first:
                mode = "error500"
            if mode == "garbage":
                return self._send(200, b"<html>definitely not json", "text/html")
            if mode == "error500":
                return self._send(500, json.dumps({"error": {"message": "boom"}}).encode(), "application/json")
            if rf and rf["type"] not in srv.accepts:  # as llama-cpp-python answers an unknown response_format
                return self._send(422, json.dumps({"detail": [{"msg": f"bad response_format {rf['type']}"}]}).encode(),
                                  "application/json")
            text = srv.reply if mode == "ok" else "I would rather not say."
            text = next((r for key, r in srv.reply_for.items() if key in body["messages"][-1]["content"]), text)
            if rf and rf["type"] in srv.keeps_to:
                text = schema_reply(rf["json_schema"]["schema"] if rf["type"] == "json_schema" else rf["schema"])
            resp = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105}}
            self._send(200, json.dumps(resp).encode(), "application/json")
        finally:
            with srv.lock:
                srv.in_flight -= 1

    def _send(self, code, data, ctype):
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


# ----------------------------------------------------------------------------- a driver to kill and resume


def history(run_dir: Path, trial_id: str) -> list[dict]:
    path = run_dir / "trials" / trial_id / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def start_sweep(*args: str, log: Path | None = None) -> subprocess.Popen:
    """The driver in its own process group, so that killing the group also kills its local Ray. `log`: its
    output goes to that file (read it with output()) instead of a pipe, which a long run could fill."""
    env = {**os.environ, **PLANTED_SECRETS, "RAY_DEDUP_LOGS": "0"}
    out = open(log, "w") if log else subprocess.PIPE  # noqa: SIM115 - the child holds it; closed when it ends
    proc = subprocess.Popen([sys.executable, "-m", "harness.sweep", *args], cwd=REPO, env=env, text=True,
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    proc.log = log
    if log:
        out.close()
    return proc


def output(proc: subprocess.Popen) -> str:
    return proc.log.read_text() if proc.log else proc.stdout.read()


def wait_for(proc: subprocess.Popen, condition, timeout: float = 900, poll_s: float = 0.2) -> None:
    t0 = time.monotonic()
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before the moment to interrupt it:\n{output(proc)[-3000:]}")
        if time.monotonic() - t0 > timeout:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("timed out waiting for the sweep")
        time.sleep(poll_s)


def kill_trial_workers(run_dir: Path) -> None:
    """Ray's workers have process groups of their own: a worker outlives the killed driver for a moment and
    can still write a checkpoint (CI, 2026-12-01: into a directory this test had just renamed). Kill the
    trials' workers too and wait for them, so that nothing changes the run directory while the test edits it."""
    import psutil

    pids = {h["pid"] for t in (run_dir / "trials").iterdir() for h in history(run_dir, t.name) if "pid" in h}
    workers = []
    for pid in pids:
        try:
            worker = psutil.Process(pid)
            if worker.cmdline()[:1] and worker.cmdline()[0].startswith("ray::"):
                worker.kill()
                workers.append(worker)
        except psutil.Error:
            pass  # gone already
    psutil.wait_procs(workers, timeout=30)


def last_report(run_dir: Path, trial_id: str) -> int:
    h = history(run_dir, trial_id)
    return h[-1]["report"] if h else 0


def trial_ids(run_dir: Path) -> list[str]:
    return sorted(d.name for d in (run_dir / "trials").iterdir()) if (run_dir / "trials").is_dir() else []


def kill_at(driver: subprocess.Popen, run_dir: Path, moment, after_s: float = 0.0) -> dict[str, bytes]:
    """kill -9 the driver (and its Ray) at `moment` (polled every 20 ms), `after_s` later; returns the
    histories, as they were, of the trials whose final report the driver had recorded."""
    wait_for(driver, moment, poll_s=0.02)
    time.sleep(after_s)
    with contextlib.suppress(ProcessLookupError):  # it may have finished in those after_s
        os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    kill_trial_workers(run_dir)
    return {t: (run_dir / "trials" / t / "metrics.jsonl").read_bytes() for t in trial_ids(run_dir)
            if last_report(run_dir, t) == 4}


def crash_tracebacks(text: str) -> list[str]:
    """The tracebacks in a driver's output, less Ray's own at shutdown: a worker that ray.shutdown()
    SIGTERMs inside a weakref callback prints "Exception ignored in: ... sigterm_handler ... SystemExit: 1"
    (CI, 2026-12-02, after a packed sweep's --resume). That one is Ray ending its worker, not a crash."""
    marker = "Traceback (most recent call last):"
    starts = [m.start() for m in re.finditer(re.escape(marker), text)]
    found = []
    for k, i in enumerate(starts):
        block = text[i : starts[k + 1] if k + 1 < len(starts) else i + 4000]
        ray_sigterm = "Exception ignored in" in text[max(0, i - 300) : i] and "sigterm_handler" in block \
            and "SystemExit: 1" in block
        if not ray_sigterm:
            found.append(block[:1500])
    return found
