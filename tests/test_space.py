"""Search-space expansion and ties (pure functions)."""

from __future__ import annotations

from ray import tune

from harness.config import Param, SearchConfig, load_sweep
from harness.space import grid_points, param_space, resolve, tied_values


def test_lora_rank_grid_has_five_points_with_alpha_twice_r():
    cfg, _ = load_sweep("sweeps/lora_rank.yaml")
    points = grid_points(cfg.search)
    assert [p["lora.r"] for p in points] == [4, 8, 16, 32, 64]
    assert all(p["lora.alpha"] == 2 * p["lora.r"] and isinstance(p["lora.alpha"], int) for p in points)


def test_domains_by_kind():
    s = SearchConfig(algorithm="random", space={
        "lora.r": Param(choice=[4, 8]), "train.lr": Param(loguniform=(1e-5, 1e-3)),
        "lora.dropout": Param(uniform=(0.0, 0.1)), "train.epochs": Param(int=(1, 3)),
        "lora.alpha": Param(tie="lora.r", times=2),
    })
    space = param_space(s)
    assert "lora.alpha" not in space  # ties are resolved in the trial, never sampled
    assert isinstance(space["lora.r"], tune.search.sample.Categorical)
    assert isinstance(space["train.lr"].get_sampler(), tune.search.sample.LogUniform)
    assert space["train.epochs"].upper == 4  # inclusive YAML range -> exclusive randint bound


def test_grid_algorithm_enumerates_choices_and_seeds():
    s = SearchConfig(algorithm="grid", seeds=[0, 1], num_samples=1,
                     space={"lora.r": Param(choice=[4, 8]), "lora.alpha": Param(tie="lora.r", plus=1)})
    assert param_space(s)["lora.r"] == {"grid_search": [4, 8]}
    assert param_space(s)["train.seed"] == {"grid_search": [0, 1]}
    points = grid_points(s)
    assert len(points) == 4 and {(p["lora.r"], p["train.seed"], p["lora.alpha"]) for p in points} == {
        (4, 0, 5), (4, 1, 5), (8, 0, 9), (8, 1, 9)}


def test_resolve_applies_params_and_ties_without_touching_base():
    base = {"lora": {"r": 8, "alpha": 16}, "train": {"lr": 1e-4}}
    space = {"lora.r": Param(grid=[4, 32]), "lora.alpha": Param(tie="lora.r", times=2)}
    out = resolve(base, {"lora.r": 32}, space)
    assert out["lora"] == {"r": 32, "alpha": 64} and base["lora"]["r"] == 8
    assert tied_values({"lora.r": 3}, {"lora.alpha": Param(tie="lora.r", times=0.5)}) == {"lora.alpha": 1.5}
