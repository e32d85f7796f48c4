"""Shared fixtures. Tests read real data from ../shared/data (HARNESS_DATA_DIR overrides) and the
embedded SmolLM2-135M model (converted once into the user cache, ~20 s the first time)."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainables.paths import find_data


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from trainables.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))


@pytest.fixture(scope="session")
def data_file():
    """Path of a real data file, or a clear failure naming what is missing."""

    def get(rel: str):
        path = find_data(rel)
        if path is None:
            pytest.fail(f"real data file {rel} not found; set HARNESS_DATA_DIR to the shared/data directory")
        return path

    return get


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


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """sweeps/smoke.yaml as shipped (Optuna TPE, ASHA, 2 concurrent trials, W&B offline, report at
    the end), run once per test session and shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("runs")
    proc = run_sweep("sweeps/smoke.yaml", f"output.dir={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out / "smoke" / "driver.log").write_text(proc.stdout + proc.stderr)
    return out / "smoke"


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
