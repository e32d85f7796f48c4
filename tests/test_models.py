"""Model resolution: embedded GGUF (converted once, cached), local dirs, hub ids, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainables.models import ModelNotFound, load_model, resolve_model


@pytest.mark.slow
def test_embedded_model_is_converted_once_into_the_cache(monkeypatch, tmp_path):
    # Load times are measured by bench/, not asserted here (the CPU is shared and noisy).
    path = resolve_model("smollm2-135m-instruct")  # converts on the first call of a fresh cache
    assert (Path(path) / "model.safetensors").exists() and (Path(path) / "tokenizer.json").exists()
    assert resolve_model(path) == path  # the cache dir is itself a valid local checkpoint
    model, tok, timings = load_model("smollm2-135m-instruct")
    assert model.config.model_type == "llama" and model.num_parameters() > 100e6
    assert tok.chat_template and tok.pad_token is not None
    assert set(timings) == {"model_resolve_seconds", "model_load_seconds"}


def test_hub_ids_resolve_from_the_cache_or_fail_fast_and_garbage_is_rejected(tmp_path, monkeypatch):
    import time

    from huggingface_hub import constants

    # No hub here (an endpoint nothing listens on): a cached id resolves, an uncached one fails at once.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    repo = tmp_path / "hub" / "models--org--cached"
    (repo / "snapshots" / "abc").mkdir(parents=True)
    (repo / "snapshots" / "abc" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_model("org/cached") == "org/cached"
    t = time.perf_counter()
    with pytest.raises(ModelNotFound, match=r"model.name: 'meta-llama/Llama-2-7b-hf' is not in the Hugging Face "
                                            r"cache .* cannot be reached from here; download it"):
        resolve_model("meta-llama/Llama-2-7b-hf")
    assert time.perf_counter() - t < 30  # one connect attempt, not transformers' ~50 s of retries
    with pytest.raises(ModelNotFound, match="model.name: 'no-such-model'"):
        resolve_model("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="has no config.json"):
        resolve_model(str(tmp_path / "empty"))
