"""Model resolution: embedded GGUF (converted once, cached), local dirs, hub ids, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainables.models import ModelNotFound, load_model, resolve_model


def test_embedded_model_is_converted_once_into_the_cache(monkeypatch, tmp_path):
    # Load times are measured by bench/, not asserted here (the CPU is shared and noisy).
    path = resolve_model("smollm2-135m-instruct")  # converts on the first call of a fresh cache
    assert (Path(path) / "model.safetensors").exists() and (Path(path) / "tokenizer.json").exists()
    assert resolve_model(path) == path  # the cache dir is itself a valid local checkpoint
    model, tok, timings = load_model("smollm2-135m-instruct")
    assert model.config.model_type == "llama" and model.num_parameters() > 100e6
    assert tok.chat_template and tok.pad_token is not None
    assert set(timings) == {"model_resolve_seconds", "model_load_seconds"}


def test_hub_ids_pass_through_and_garbage_is_rejected(tmp_path):
    assert resolve_model("meta-llama/Llama-2-7b-hf") == "meta-llama/Llama-2-7b-hf"
    with pytest.raises(ModelNotFound, match="model.name: 'no-such-model'"):
        resolve_model("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"))
