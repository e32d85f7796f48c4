"""EvalConfig: strict, validated, and metrics() names exactly what run_all produces."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from trainables.evaluate import EVALUATORS, run_all
from trainables.schema.eval import EvalConfig, MCQSet


def test_defaults_run_nothing(tmp_path):
    cfg = EvalConfig()
    assert cfg.metrics() == []
    assert run_all(cfg, object(), object(), tmp_path / "t") == {}  # no model work, no files
    assert not (tmp_path / "t").exists()


def test_registry_order_puts_generation_before_judge():
    names = EVALUATORS.names_in_order()
    assert set(names) == {"perplexity", "mcq", "generate", "judge", "lm_eval"}
    assert names.index("generate") < names.index("judge")
    assert EVALUATORS.get("judge").after == ("generate",)  # declared where the judge is defined


def test_run_order_follows_after_not_names_or_imports():
    from trainables.evaluate import Evaluator, _OrderedRegistry

    def ev(*after):
        return Evaluator(enabled=bool, metrics=list, run=dict, after=after)

    reg = _OrderedRegistry("evaluator")
    for name, e in (("zeta", ev()), ("alpha", ev("zeta")), ("beta", ev())):
        reg.register(name)(e)
    assert reg.names_in_order() == ["zeta", "alpha", "beta"]
    reg.register("gamma")(ev("delta"))
    reg.register("delta")(ev("gamma"))
    with pytest.raises(ValueError, match="circle"):
        reg.names_in_order()


def test_metric_names_for_a_full_config():
    cfg = EvalConfig.model_validate({
        "perplexity": ["classical_zh/public_test.json", "eval/evol_instruct_gt.json"],
        "mcq": [{"name": "mmlu", "preset": "mmlu"}],
        "generate": {"data": "eval/evol_instruct_gt.json"},
        "judge": {"enabled": True, "base_url": "http://127.0.0.1:1/v1"},
    })
    m = cfg.metrics()
    for name in ("ppl_public_test", "loss_public_test", "ppl_evol_instruct_gt", "mcq_mmlu_acc", "mcq_acc",
                 "gen_seconds", "judge_score", "judge_parse_failures", "judge_win_rate", "eval_seconds"):
        assert name in m
    assert len(m) == len(set(m))


def test_presets_fill_columns_and_paths():
    s = MCQSet.model_validate({"name": "arc", "preset": "arc", "shots": 3})
    assert s.question == "question.stem" and s.choices == "question.choices" and s.dev
    s = MCQSet.model_validate({"name": "x", "preset": "mmlu", "answer": "answer"})
    assert s.choices == ["choice0", "choice1", "choice2", "choice3"]


@pytest.mark.parametrize("raw, fragment", [
    ({"perplexity": ["nope/missing.json"]}, "not found"),
    ({"perplexity_limit": 0}, "greater than"),
    ({"bogus": 1}, "Extra inputs"),
    ({"mcq": [{"name": "m", "path": "mcq/mmlu/test", "choices": ["a", "b"], "multi": True, "score": "text"}]},
     "multi-answer sets are scored by their letters; set score: letter"),
    ({"mcq": [{"name": "m", "path": "mcq/mmlu/test"}]}, "give choices (where the options are) or fixed_choices"),
    ({"mcq": [{"name": "m", "path": "mcq/mmlu/test", "choices": "o", "fixed_choices": ["yes", "no"]}]},
     "not both"),
    ({"mcq": [{"name": "m", "preset": "mmlu", "header": "About {topic}:"}]},
     "unknown placeholder(s) {topic}; only {subject} is filled in"),
    ({"mcq": [{"name": "m", "preset": "mmlu", "dev": {"path": "nope/dev.csv"}}]}, "mcq dev 'nope/dev.csv' not found"),
    ({"perplexity": [{"path": "eval/evol_instruct_gt.json", "fields": {"prompt_text": "q"}}]},
     "unknown field name(s) prompt_text"),
    ({"perplexity": ["eval/evol_instruct_gt.json", {"path": "classical_zh/public_test.json",
                                                    "name": "evol_instruct_gt"}]}, "distinct names"),
    ({"perplexity": ["eval/evol_instruct_gt.json", {"path": "classical_zh/public_test.json",
                                                    "name": "mean_evol_instruct_gt"}]}, "would both write"),
    ({"mcq": [{"name": "bad name", "preset": "mmlu"}]}, "pattern"),
    ({"mcq": [{"name": "a", "preset": "mmlu"}, {"name": "a", "preset": "arc"}]}, "distinct"),
    ({"judge": {"enabled": True}}, "needs generate.data"),
    ({"judge": {"api_key_env": "sk-abc123"}}, "NAME of an environment variable"),
    ({"judge": {"api_key_env": "MY KEY"}}, "NAME of an environment variable"),
    ({"generate": {"data": "eval/evol_instruct_gt.json", "top_p": 0}}, "greater than"),
    ({"generate": {"temperature": -1}}, "greater than or equal"),
    ({"adapter": "/nonexistent/adapter"}, "not a peft adapter"),
])
def test_invalid_values_are_rejected(raw, fragment):
    with pytest.raises(ValidationError) as e:
        EvalConfig.model_validate(raw)
    assert fragment in str(e.value)


def test_custom_template_must_fit_the_mode(tmp_path):
    bad = tmp_path / "t.txt"
    bad.write_text("Rate this: {answer}")
    with pytest.raises(ValidationError, match=r"placeholder \{answer\} is not supplied in pairwise mode"):
        EvalConfig.model_validate({"judge": {"template": str(bad)}})
    with pytest.raises(ValidationError, match=r"a single judge template must show \{question\}"):
        EvalConfig.model_validate({"judge": {"template": str(bad), "mode": "single"}})
    good = tmp_path / "g.txt"
    good.write_text("Q: {question}\nA: {answer}\nGive 'Rating: N'. JSON like {\"a\": 1} is fine.")
    assert EvalConfig.model_validate({"judge": {"template": str(good), "mode": "single"}}).judge.template


def test_sweep_config_accepts_eval_metrics_and_searched_decoding():
    from harness.config import load_sweep

    cfg, _ = load_sweep("sweeps/decoding.yaml")
    assert cfg.eval.only and cfg.search.metric in cfg.metrics()
    assert "eval.generate.temperature" in cfg.search.space


def test_judge_cost_uses_known_list_prices_unless_given():
    from trainables.schema.eval import JudgeConfig

    hosted = JudgeConfig(enabled=True, model="gpt-4o-mini")
    assert (hosted.price_prompt_per_mtok, hosted.price_completion_per_mtok) == (0.15, 0.60)
    local = JudgeConfig(enabled=True, model="judge", base_url="http://127.0.0.1:8080/v1")
    assert (local.price_prompt_per_mtok, local.price_completion_per_mtok) == (0.0, 0.0)
    mine = JudgeConfig(enabled=True, model="gpt-4o-mini", price_prompt_per_mtok=1.0)
    assert (mine.price_prompt_per_mtok, mine.price_completion_per_mtok) == (1.0, 0.60)


def test_early_stopping_on_a_named_test_set_needs_it_scored_at_every_report():
    from harness.config import ConfigError, load_sweep

    ppl = ["eval.perplexity=[eval/evol_instruct_gt.json]", "search.metric=ppl_evol_instruct_gt"]
    with pytest.raises(ConfigError) as e:
        load_sweep("sweeps/smoke.yaml", ppl)  # ASHA, but the perplexity is only known at the end
    assert "use scheduler.type: fifo or eval.perplexity_every_report: true" in str(e.value)
    cfg, _ = load_sweep("sweeps/smoke.yaml", [*ppl, "eval.perplexity_every_report=true"])
    assert "ppl_evol_instruct_gt" in cfg.report_metrics() and "mcq_acc" not in cfg.report_metrics()
    with pytest.raises(ConfigError, match="perplexity_every_report needs perplexity files"):
        load_sweep("sweeps/smoke.yaml", ["eval.perplexity_every_report=true"])
