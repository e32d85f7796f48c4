"""levels() / combos(): the values a searched path takes, and their combinations (pure; no Ray, no model)."""

from __future__ import annotations

from harness.config import SweepConfig
from harness.levels import combos, levels, searched


def cfg(space: dict, **search) -> SweepConfig:
    return SweepConfig.model_validate({"name": "t", "lora": {"r": 8},
                                       "search": {"algorithm": "grid", "space": space, **search}})


def test_a_path_not_searched_has_its_configured_value():
    assert levels(cfg({}), "lora.r") == [8]


def test_a_grid_or_choice_entry_has_its_values_in_order():
    assert levels(cfg({"lora.r": {"grid": [16, 4]}}), "lora.r") == [16, 4]
    assert levels(cfg({"lora.r": {"choice": [2, 4]}}), "lora.r") == [2, 4]


def test_a_tie_follows_its_target():
    c = cfg({"lora.r": {"grid": [4, 8]}, "lora.alpha": {"tie": "lora.r", "times": 2}})
    assert levels(c, "lora.alpha") == [8, 16]


def test_a_sampled_range_has_no_levels():
    assert levels(cfg({"train.lr": {"loguniform": [1e-5, 1e-3]}}, algorithm="random"), "train.lr") == []


def test_several_seeds_are_the_levels_of_train_seed():
    assert levels(cfg({}, seeds=[1, 2, 3]), "train.seed") == [1, 2, 3]
    assert levels(cfg({}, seeds=[7]), "train.seed") == [0]  # one seed: the trials use train.seed


def test_combos_is_the_product_in_the_order_given():
    c = cfg({"lora.r": {"grid": [4, 8]}, "selection.n": {"grid": [10, 20]}})
    assert combos(c, ["lora.r", "selection.n"]) == [
        {"lora.r": 4, "selection.n": 10}, {"lora.r": 4, "selection.n": 20},
        {"lora.r": 8, "selection.n": 10}, {"lora.r": 8, "selection.n": 20}]
    assert combos(c, ["lora.r", "lora.dropout"]) == [{"lora.r": 4, "lora.dropout": 0.05},
                                                    {"lora.r": 8, "lora.dropout": 0.05}]
    assert combos(c, []) == [{}]


def test_searched_lists_grid_and_choice_paths_under_a_prefix():
    c = cfg({"selection.n": {"grid": [10]}, "lora.r": {"grid": [4]}, "selection.strategy": {"choice": ["random"]}})
    assert searched(c, "selection.") == ["selection.n", "selection.strategy"]
    assert searched(c, ("lora.", "selection.n")) == ["selection.n", "lora.r"]
