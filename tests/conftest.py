"""Shared fixtures. Tests read real data from ../shared/data (HARNESS_DATA_DIR overrides) and the
embedded SmolLM2-135M model (converted once into the user cache, ~20 s the first time)."""

from __future__ import annotations

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
