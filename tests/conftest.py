"""Shared fixtures. Tests read real data from ../shared/data (HARNESS_DATA_DIR overrides) and the
embedded SmolLM2-135M model (converted once into the user cache, ~20 s the first time)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import (  # noqa: F401 - re-exported for tests that still import them from conftest
    PLANTED_SECRETS,
    REPO,
    leaks,
    read_csv,
    read_only_dir,
    run_sweep,
    sweep_env,
    tmpfs,
    wandb_runs,
)

from trainables.paths import find_data


@pytest.fixture(scope="session", autouse=True)
def _embedded_model_converted():
    """The embedded model converted before any test runs: its first conversion prints a progress bar on
    stderr, which a test reading a command's stderr line by line would otherwise see when it happens to
    run first on a fresh cache (test_pack_config alone did)."""
    from trainables.models import resolve_model

    resolve_model("smollm2-135m-instruct")


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


@pytest.fixture(scope="session")
def _base_model():
    from trainables.models import load_model

    model, tok, _ = load_model("smollm2-135m-instruct")
    return model.eval(), tok


@pytest.fixture(scope="module")
def model_tok(_base_model):
    """The embedded SmolLM2-135M and its tokenizer, loaded once per session, in eval mode; a test that
    switches the mode restores it. One thread while a module uses it: on a small shared CPU two OpenMP
    threads contend and run ~10x slower."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model, tok = _base_model
    yield model.eval(), tok
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """sweeps/smoke.yaml as shipped (Optuna TPE, ASHA, 2 concurrent trials, W&B offline, report at
    the end), run once per test session and shared by the tests that read its outputs."""
    out = tmp_path_factory.mktemp("runs")
    proc = run_sweep("sweeps/smoke.yaml", f"output.dir={out}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out / "smoke" / "driver.log").write_text(proc.stdout + proc.stderr)
    return out / "smoke"
