"""Config of eval.lm_eval: lm-evaluation-harness tasks run on the trial's model (trainables/evaluate/lmeval.py).

    lm_eval: {tasks: [my_task], num_fewshot: 0, limit: 100, include_path: tasks/}
        -> lmeval_my_task_acc, lmeval_my_task_acc_stderr, lmeval_my_task_n_scored, lmeval_my_task_shots, ...

The task names are resolved while the sweep file is validated (an unknown task, or lm-eval not installed,
is an error at eval.lm_eval.tasks before anything starts), because the metric names and their directions
come from the tasks' own definitions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from trainables.paths import find_data
from trainables.schema.base import Strict


def _directory(path: str) -> str:
    """An absolute directory: as given, else relative to the working directory, else under the data dirs
    (stored resolved: trials run in other working directories)."""
    p = Path(path).expanduser()
    found = p if p.is_absolute() or p.exists() else find_data(path)
    if found is None or not found.exists():
        raise ValueError(f"{path!r} not found (looked in the working directory, HARNESS_DATA_DIR and "
                         "../shared/data); give the folder holding the task YAML files")
    if not found.is_dir():
        raise ValueError(f"{path!r} is a file; give the folder holding the task YAML files")
    return str(found.resolve())


class LMEvalConfig(Strict):
    """lm-evaluation-harness tasks, scored in-process on the trained model (adapter applied, no reload)."""

    tasks: list[str] = Field(..., min_length=1, description="task or group names: lm-eval's own (they need the "
                                                            "hub for their data) or those defined in include_path")
    num_fewshot: int | None = Field(None, ge=0, le=32, description="shots for every task; default: each task's own")
    limit: int | None = Field(None, ge=1, description="first n documents of each task (a partial score: the "
                                                      "n_scored column says how many)")
    include_path: list[str] = Field(default_factory=list,
                                    description="folders of task YAML files (offline tasks over local files)")
    apply_chat_template: bool = Field(False, description="format prompts with the model's chat template")
    batch_size: int | None = Field(None, ge=1, description="default: eval.batch_size")

    @field_validator("include_path", mode="before")
    @classmethod
    def _one_path(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("include_path")
    @classmethod
    def _paths(cls, v: list[str]) -> list[str]:
        return [_directory(p) for p in v]

    @field_validator("tasks")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each task once")
        return v

    @model_validator(mode="after")
    def _known_tasks(self) -> LMEvalConfig:
        from trainables.evaluate.lmeval import task_problem
        from trainables.schema.eval import field_error

        problem = task_problem(self)
        if problem:
            raise field_error("LMEvalConfig", "tasks", problem)
        return self
