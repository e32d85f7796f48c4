"""What a failed trial leaves in results.csv (error type + the traceback's last lines), and the masking
of secrets in what a sweep writes. Fast: tracebacks in the shapes Ray 2.60 writes to error.txt."""

from __future__ import annotations

from harness.config import parse_override
from harness.results import error_summary
from trainables.secrets import redact

NAN = """Failure # 1 (occurred at 2026-11-23_16-26-34)
\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=12733, ip=192.0.2.2, actor_id=f12e5fd5, repr=train_trial)
  File "/usr/lib/python3.11/site-packages/ray/tune/trainable/function_trainable.py", line 331, in entrypoint
    return self._trainable_func(
           ^^^^^^^^^^^^^^^^^^^^^
  File "/work/trainables/qlora.py", line 241, in train_trial
    raise FloatingPointError(message)
FloatingPointError: loss became NaN/inf at step 1; lower train.lr
"""

# A NaN trial with one retry (recovery.max_failures=1): the retry finds nan_loss.txt and raises the same
# error at once, from the top of train_loop; Ray's error file holds both failures.
NAN_RETRIED = NAN + """Failure # 2 (occurred at 2026-11-23_16-26-36)
ray::ImplicitFunc.train() (pid=12733, ip=192.0.2.2, actor_id=f12e5fd5, repr=train_trial)
  File "/work/trainables/qlora.py", line 197, in train_loop
    raise FloatingPointError(nan_marker.read_text(encoding="utf-8"))
FloatingPointError: loss became NaN/inf at step 1; lower train.lr
"""

DIED = """Failure # 1 (occurred at 2026-11-23_17-05-10)
The actor died unexpectedly before finishing this task.
ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task.
\tclass_name: ImplicitFunc
\tactor_id: 9e9b36de3784542a54707d5601000000
\tpid: 26286
\tnamespace: 1109301e
The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR
"""

CUDA = """Failure # 2 (occurred at 2026-11-23_17-05-10)
ray::ImplicitFunc.train() (pid=1, ip=10.0.0.2, actor_id=ab, repr=train_trial)
  File "/work/trainables/qlora.py", line 210, in train_trial
    loss.backward()
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity)
"""


def test_error_type_and_last_lines_of_the_traceback():
    assert error_summary(NAN) == ("FloatingPointError", "FloatingPointError: loss became NaN/inf at step 1; "
                                  "lower train.lr (at qlora.py:241 in train_trial)")
    kind, text = error_summary(DIED)
    assert kind == "ActorDiedError"
    assert text == ("ray.exceptions.ActorDiedError: The actor died unexpectedly before finishing this task. | "
                    "class_name: ImplicitFunc | actor_id: 9e9b36de3784542a54707d5601000000 | pid: 26286")
    assert error_summary(CUDA) == ("OutOfMemoryError", "torch.OutOfMemoryError: CUDA out of memory. Tried to "
                                   "allocate 2.00 GiB (GPU 0; 79.1 GiB total capacity) (at qlora.py:210 in "
                                   "train_trial)")
    assert error_summary("killed\nno exception line here") == ("", "killed | no exception line here")


def test_where_a_nan_trial_failed_is_where_the_loss_became_nan():
    # Not the retry's re-raise: the location recorded is where the loss was found NaN.
    assert error_summary(NAN_RETRIED) == error_summary(NAN) == (
        "FloatingPointError", "FloatingPointError: loss became NaN/inf at step 1; lower train.lr (at qlora.py:241 "
        "in train_trial)")
    # A retry that fails differently is recorded as it failed last.
    assert error_summary(NAN + CUDA)[0] == "OutOfMemoryError"


def test_secret_values_from_the_environment_are_masked(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-0123456789abcdef")
    monkeypatch.setenv("MY_JUDGE_VAR", "judge-secret-value-42")
    monkeypatch.setenv("SHORT_TOKEN", "abc")  # too short to be a key: left alone
    text = "command: x eval.description=sk-live-0123456789abcdef abc judge-secret-value-42"
    assert redact(text) == "command: x eval.description=${OPENAI_API_KEY} abc judge-secret-value-42"
    assert redact(text, ("MY_JUDGE_VAR",)) == "command: x eval.description=${OPENAI_API_KEY} abc ${MY_JUDGE_VAR}"


def test_numbers_with_exponents_are_numbers_everywhere():
    # PyYAML reads 1e-4 and 1.0e12 as strings; grid levels must be numbers (results columns, sorting).
    assert parse_override("train.lr=1e-4") == ("train.lr", 1e-4)
    assert parse_override("search.space={train.lr: {grid: [3e-4, 1.0e12]}}") == (
        "search.space", {"train.lr": {"grid": [3e-4, 1e12]}})
    assert parse_override("model.name=org/m1e5") == ("model.name", "org/m1e5")
