"""harness/display.py and harness/console.py: what the sweep prints. The display is a Ray Tune callback;
here it is fed the events Tune would send (the sweep tests run it under real Tune, tests/test_sweep_e2e.py)."""

from __future__ import annotations

import io
import pickle
import re
from types import SimpleNamespace

from harness.console import plain, summarize
from harness.display import SweepDisplay

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class Trial:
    def __init__(self, trial_id: str, r: int):
        self.trial_id, self.config, self.status = trial_id, {"lora.r": r, "lora.alpha": 2 * r}, "RUNNING"
        self.last_result: dict = {}
        self.error_file = None


def _feed(display: SweepDisplay) -> list[Trial]:
    a, b, c = Trial("8c6fd_00000", 4), Trial("8c6fd_00001", 8), Trial("8c6fd_00002", 16)
    for t in (a, b):
        display.on_trial_start(0, [a, b], t)
    for k in (1, 2):
        for t, loss in ((a, 2.0), (b, 1.9)):
            t.last_result = {"report": k, "training_iteration": k, "step": 6 * k, "total_steps": 25,
                             "eval_loss": loss - k / 10, "tokens_per_second": 110.0, "node": "192.0.2.2"}
            display.on_trial_result(k, [a, b], t, t.last_result)
    a.status = "TERMINATED"  # ASHA cut it at report 2 of 4: Ray says TERMINATED, the display must not
    display.on_trial_complete(2, [a, b], a)
    display.on_trial_start(2, [a, b, c], c)
    b.last_result = {**b.last_result, "report": 4, "step": 25}
    display.on_trial_result(4, [a, b, c], b, b.last_result)
    b.status = "TERMINATED"
    display.on_trial_complete(4, [a, b, c], b)
    c.status = "ERROR"
    display.on_trial_error(4, [a, b, c], c)
    return [a, b, c]


def test_piped_prints_a_plain_line_per_event():
    out = io.StringIO()
    display = SweepDisplay(metric="eval_loss", mode="min", searched=["lora.r"], reports_per_trial=4,
                           total_trials=5, live=False, out=out)
    _feed(display)
    lines = out.getvalue().splitlines()
    assert not CONTROL.search(out.getvalue())
    events = [ln.split("] ", 1)[1] for ln in lines if "] trial " in ln]
    assert events[0] == "trial 8c6fd_00000 started: lora.r=4"
    assert "trial 8c6fd_00000 report 1/4: eval_loss 1.9 (best 1.9), 110 tok/s on 192.0.2.2" in events
    assert any(e.startswith("trial 8c6fd_00000 stopped early at report 2/4: eval_loss 1.8") for e in events)
    assert any(e.startswith("trial 8c6fd_00001 finished at report 4/4") for e in events)
    assert any(e.startswith("trial 8c6fd_00002 failed") for e in events)
    assert len(events) == 3 + 5 + 3  # started x3, reported x5, ended x3: nothing else
    progress = [ln.strip() for ln in lines if ln.strip().startswith("sweep: ")]
    assert progress[-1].startswith("sweep: 3 of 5 trials done (1 stopped early, 1 failed), 0 running, 2 pending")
    assert "left" in progress[0]  # an estimate from the measured rate once there are reports


def test_an_objective_scored_only_at_the_last_report_is_said_to_be_missing_before_it():
    out = io.StringIO()
    display = SweepDisplay(metric="mcq_law_acc", mode="max", searched=["lora.r"], reports_per_trial=2,
                           total_trials=1, live=False, out=out)
    t = Trial("8c6fd_00000", 8)
    display.on_trial_start(0, [t], t)
    display.on_trial_result(1, [t], t, {"report": 1, "eval_loss": 2.1})
    display.on_trial_result(2, [t], t, {"report": 2, "eval_loss": 2.0, "mcq_law_acc": 0.3})
    events = [ln.split("] ", 1)[1] for ln in out.getvalue().splitlines() if "] trial " in ln]
    assert events[1] == "trial 8c6fd_00000 report 1/2: mcq_law_acc not reported yet"
    assert events[2] == "trial 8c6fd_00000 report 2/2: mcq_law_acc 0.3 (best 0.3)"


def test_the_live_table_tells_early_stopped_and_failed_from_finished():
    from rich.console import Console

    display = SweepDisplay(metric="eval_loss", mode="min", searched=["lora.r"], reports_per_trial=4,
                           total_trials=5, live=False, out=io.StringIO())
    _feed(display)
    buf = io.StringIO()
    Console(file=buf, width=200).print(display.table())
    text = buf.getvalue()
    rows = {ln.split("│")[1].strip(): ln for ln in text.splitlines() if "8c6fd_" in ln}
    assert "EARLY_STOPPED" in rows["8c6fd_00000"] and "2/4" in rows["8c6fd_00000"]
    assert "TERMINATED" in rows["8c6fd_00001"] and "4/4" in rows["8c6fd_00001"]
    assert "ERROR" in rows["8c6fd_00002"]
    assert "192.0.2.2" in rows["8c6fd_00000"] and "1.8" in rows["8c6fd_00000"]
    assert "3 of 5 trials done" in text


def test_display_survives_pickling_for_resume():
    display = SweepDisplay(metric="eval_loss", mode="min", searched=["lora.r"], reports_per_trial=4,
                           total_trials=2, live=True, out=io.StringIO())
    again = pickle.loads(pickle.dumps(display))
    assert again._live is None and again.total_trials == 2


def test_summary_is_not_cut_when_piped():
    cfg = SimpleNamespace(name="lora_rank", search=SimpleNamespace(metric="eval_loss", mode="min",
                                                                   space={"lora.r": 0, "lora.alpha": 0}),
                          data=SimpleNamespace(train="alpaca/random_9k.json"))
    rows = [{"trial_id": f"75405_0000{i}", "status": "EARLY_STOPPED" if i == 0 else "TERMINATED",
             "config/lora.r": 4 * 2 ** i, "config/lora.alpha": 8 * 2 ** i, "eval_loss": 1.9 - i / 10,
             "best_eval_loss": 1.8, "train_seconds": 80.5, "tokens_seen": 10551.0, "tokens_per_second": 123.4,
             "bad_rows": 4, "pool_rows": 9000} for i in range(5)]
    out = io.StringIO()
    summarize(cfg, rows, out)
    text = out.getvalue()
    assert "…" not in text and not CONTROL.search(text)
    for r in rows:
        assert r["trial_id"] in text
    assert "EARLY_STOPPED" in text and "tokens_per_second" in text and "best_eval_loss" in text
    assert "data: 4 of 9,000 rows of alpaca/random_9k.json malformed and skipped" in text


def test_plain_keeps_one_line():
    assert plain("a\nb\x1b[31mc\r") == "a | b [31mc "


def test_live_mode_draws_the_table_and_stops_cleanly(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a terminal's width (a StringIO has none)
    out = io.StringIO()
    display = SweepDisplay(metric="eval_loss", mode="min", searched=["lora.r"], reports_per_trial=4,
                           total_trials=5, live=True, out=out)
    trials = _feed(display)
    display.on_step_end(5, trials)
    display.on_experiment_end(trials)
    text = out.getvalue()
    assert "EARLY_STOPPED" in text and "3 of 5 trials done" in text
    assert "] trial " not in text  # no event lines on a terminal: the table says it
    assert display._live is None


def test_a_trial_tune_fails_without_a_callback_is_reported():
    """Tune marks a trial ERROR without on_trial_error when it cannot start it in a reused worker."""
    out = io.StringIO()
    display = SweepDisplay(metric="eval_loss", mode="min", searched=["lora.r"], reports_per_trial=4,
                           total_trials=1, live=False, out=out)
    t = Trial("02634903", 16)
    t.status = "PENDING"
    display.on_step_end(1, [t])
    t.status = "ERROR"
    display.on_experiment_end([t])
    assert "trial 02634903 failed at report 0/4" in out.getvalue()
    assert "sweep: 1 of 1 trials done (0 stopped early, 1 failed)" in out.getvalue()


def test_ray_tunes_slow_step_warning_is_for_real_stalls_only():
    import subprocess
    import sys

    # the threshold is read when ray.tune is imported: check it as the driver imports it, in a fresh process
    code = "import harness.sweep, ray.tune.utils.util as u; print(u.warn_if_slow.DEFAULT_THRESHOLD)"
    env = {k: v for k, v in __import__("os").environ.items() if k != "TUNE_WARN_THRESHOLD_S"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.stdout.strip() == "5.0", out.stderr[-2000:]
