"""The sweep schema's one home: every section of a sweep YAML as pydantic models, and a trial's config.

  base.py    Strict, the base of every model (unknown keys are errors)
  sweep.py   SweepConfig and its sections (model, train, lora, search, scheduler, resources, ...)
  data.py    data, selection, curriculum       eval.py   eval (perplexity, mcq, generate, judge)
  dotted.py  set_dotted / get_dotted (`eval.mcq.medqa.shots`)
  space.py   resolve / tied_values / grid_points, and trial_config (resolve + validate once per trial)

It depends on nothing in harness/: the trial (trainables/trial.py) and the driver (harness/) both read it.
The driver's YAML loading, overrides and checks that probe the machine stay in harness/config.py.
"""

from trainables.schema.base import Strict
from trainables.schema.dotted import get_dotted, set_dotted
from trainables.schema.space import grid_points, resolve, tied_values, trial_config
from trainables.schema.sweep import (
           HELDOUT_METRICS,
           SPACE_KINDS,
           TRAIN_METRICS,
           ConfigError,
           Param,
           SearchConfig,
           SweepConfig,
)

__all__ = ["HELDOUT_METRICS", "SPACE_KINDS", "TRAIN_METRICS", "ConfigError", "Param", "SearchConfig", "Strict",
           "SweepConfig", "get_dotted", "grid_points", "resolve", "set_dotted", "tied_values", "trial_config"]
