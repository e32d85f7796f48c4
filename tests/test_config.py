"""Schema validation: bad values give one-line errors naming the dotted field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness.config import ConfigError, SweepConfig, load_sweep, parse_override


def write(tmp_path, doc: dict):
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def problems(tmp_path, doc: dict, overrides=()) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_sweep(write(tmp_path, doc), overrides)
    assert all("\n" not in line for line in e.value.problems)
    return e.value.problems


def test_shipped_sweeps_validate():
    shipped = sorted(Path("sweeps").glob("*.yaml"))
    assert len(shipped) >= 6
    for path in shipped:
        # GPU sweeps (colab_t4) validated as on a cluster: this machine's lack of a GPU is not their fault.
        gpus = (yaml.safe_load(path.read_text()).get("resources") or {}).get("gpus_per_trial", 0)
        cfg, _ = load_sweep(path, ["ray.address=auto"] if gpus else [])
        assert cfg.name == path.stem and cfg.description, path
        assert cfg.search.space, f"{path}: a sweep file varies something"
    assert load_sweep("sweeps/lora_rank.yaml")[0].search.metric == "eval_loss"
    assert load_sweep("sweeps/baselines.yaml")[0].reports_per_trial == 1  # eval-only: one report


def test_defaults_and_name_from_file(tmp_path):
    cfg, _ = load_sweep(write(tmp_path, {}))
    assert cfg.name == "s" and cfg.model.name == "smollm2-135m-instruct" and cfg.lora.r == 8


@pytest.mark.parametrize(
    "doc, expected",
    [
        ({"lora": {"r": 0}}, "lora.r: Input should be greater than or equal to 1 (got 0)"),
        ({"train": {"lr": -1}}, "train.lr: Input should be greater than 0 (got -1)"),
        ({"lora": {"dropout": 1.0}}, "lora.dropout: Input should be less than 1 (got 1.0)"),
        ({"lora": {"alpha": 0}}, "lora.alpha: Input should be greater than 0 (got 0)"),
        ({"trian": {"epochs": 1}}, "trian: unknown key; did you mean 'train'?"),
        ({"lora": {"rank": 8}}, "lora.rank: unknown key; known keys: r, alpha, dropout, target_modules"),
        ({"model": {"quantization": "int3"}}, "model.quantization: Input should be 'none' or 'nf4' (got 'int3')"),
        ({"search": {"metric": "acc"}}, "search.metric: 'acc' is produced by no configured evaluation"),
        ({"search": {"space": {"lora.rr": {"grid": [1, 2]}}, "algorithm": "grid"}},
         "search.space.lora.rr: no such setting; did you mean 'lora.r'?"),
        ({"search": {"space": {"lora.r": {"grid": [0, 8]}}, "algorithm": "grid"}},
         "search.space.lora.r: value 0 is invalid: lora.r: Input should be greater than or equal to 1"),
        ({"search": {"space": {"train.lr": {"loguniform": [0, 1]}}}},
         "search.space.train.lr: loguniform: low must be > 0"),
        ({"search": {"space": {"lora.r": {"grid": [4], "choice": [8]}}}}, "search.space.lora.r: give exactly one of"),
        ({"search": {"space": {"lora.alpha": {"tie": "lora.r"}}}}, "search.space.lora.alpha: tie must name another searched"),
        ({"search": {"space": {"lora.r": {"grid": [4, 8]}}, "algorithm": "optuna"}}, "search.space: grid entries need"),
        ({"search": {"seeds": [0, 1], "algorithm": "optuna"}}, "search.seeds: several seeds need"),
        ({"train": {"epochs": 1, "evals_per_epoch": 1}}, "scheduler.grace_period: asha needs more reports"),
    ],
)
def test_bad_values_name_the_field(tmp_path, doc, expected):
    found = problems(tmp_path, doc)
    assert any(line.startswith(expected) for line in found), found


def test_all_problems_reported_at_once(tmp_path):
    found = problems(tmp_path, {"lora": {"r": 0, "alpah": 1}, "train": {"lr": 0}})
    assert len(found) == 3


def test_overrides_parse_yaml_values_and_apply(tmp_path):
    assert parse_override("train.lr=1e-4") == ("train.lr", 1e-4)
    assert parse_override("model.name=meta-llama/Llama-2-7b-hf") == ("model.name", "meta-llama/Llama-2-7b-hf")
    cfg, _ = load_sweep(write(tmp_path, {}), ["train.epochs=15", "lora.target_modules=[q_proj,v_proj]"])
    assert cfg.train.epochs == 15 and cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert problems(tmp_path, {}, ["train.epochs=x"])[0].startswith("train.epochs: Input should be a valid integer")
    assert problems(tmp_path, {}, ["nokey"])[0].startswith("override 'nokey': expected key=value")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_sweep(tmp_path / "nope.yaml")
    bad = tmp_path / "b.yaml"
    bad.write_text("train: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep(bad)


def test_yaml_is_never_code(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("name: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_sweep(p)


def test_model_dump_roundtrip():
    cfg, _ = load_sweep("sweeps/lora_rank.yaml")
    assert SweepConfig.model_validate(cfg.model_dump(mode="json")) == cfg


def test_baselines_hold_out_the_same_rows_as_lora_rank():
    # eval_loss of the zero/few-shot baselines and of the LoRA trials must come from the same rows.
    lora, base = load_sweep("sweeps/lora_rank.yaml")[0].data, load_sweep("sweeps/baselines.yaml")[0].data
    assert (base.train, base.eval_size, base.split_seed) == (lora.train, lora.eval_size, lora.split_seed)
