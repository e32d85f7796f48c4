"""Config section for evaluations run at the end of a trial (composed into harness.config.SweepConfig)."""

from __future__ import annotations

from pydantic import Field

from trainables.data.config import Strict


class EvalConfig(Strict):
    """Evaluations beyond the held-out eval_loss the training loop reports."""

    perplexity: list[str] = Field(default_factory=list, description="test files scored by perplexity")

    def metrics(self) -> list[str]:
        """Names of the metrics these evaluations produce (valid values of search.metric)."""
        from pathlib import Path

        return [f"ppl_{Path(p).stem}" for p in self.perplexity]
