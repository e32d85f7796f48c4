"""Keep API keys out of everything a sweep writes, prints or hands to Ray and W&B.

Keys come only from the environment (the judge names its variable, W&B and the Hugging Face hub read
theirs). Nothing reads a key into a config, but a user can still paste one into the command line or
a free-text field (`description`, `wandb.project`), and a library can put one into an exception.

One masking function, `redact`, replaces the value of every secret variable by a reference to it,
`${NAME}`: a plain string in YAML, JSON, CSV and a shell command, and one that a trial can resolve
again from its own environment (`expand`), so a config handed to Ray masked computes the same thing.
It is applied by every writer (trainables.paths.atomic_write_text), to the config the driver hands to
Ray and W&B (`redact_obj`), to the driver's console and argv (`MaskedStream`, harness/sweep.py), and to
exceptions that leave a trial (`masking_errors`) before Ray records them.

Secret variables: the well-known ones, anything named like one, and the names a sweep declares
(`eval.judge.api_key_env`), which `register` keeps in HARNESS_SECRET_VARS so that every process
started from this one (Ray's workers, the trials) covers them too.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

KNOWN = ("OPENAI_API_KEY", "WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "ANTHROPIC_API_KEY",
         "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_API_KEY", "AZURE_OPENAI_API_KEY",
         "GITHUB_TOKEN", "RAY_AUTH_TOKEN")
_SECRET_NAME = re.compile(r"(API_?KEY|ACCESS_KEY|TOKEN|SECRET|PASSWORD)", re.IGNORECASE)
REGISTERED = "HARNESS_SECRET_VARS"  # comma-separated names declared by a sweep; inherited by child processes
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MIN_LEN = 8  # shorter values are no keys (and masking them would mangle ordinary text)

T = TypeVar("T")


def mask(name: str) -> str:
    """What a secret value is written as: a reference to its variable."""
    return "${" + name + "}"


def register(*names: str) -> None:
    """Treat these variables as secret in this process and in every process it starts from now on."""
    known = [n for n in os.environ.get(REGISTERED, "").split(",") if n]
    new = [n for n in names if n and n not in known]
    if new:
        os.environ[REGISTERED] = ",".join(known + new)


def secret_names(extra_names: tuple[str, ...] = ()) -> set[str]:
    """KNOWN, the registered names, `extra_names`, and every variable set now whose name looks like a
    key's (its value not a path: HF_TOKEN_PATH=/root/... names a file, not a key)."""
    registered = {n for n in os.environ.get(REGISTERED, "").split(",") if n}
    by_name = {n for n, v in os.environ.items() if _SECRET_NAME.search(n) and not v.startswith(("/", "~", "."))}
    return set(KNOWN) | registered | set(extra_names) | (by_name - {REGISTERED})


def secret_values(extra_names: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(name, value) of the secret variables set now, longest value first (a key containing another
    is masked whole); a value set under two names is masked as the first name in sorted order."""
    found: dict[str, str] = {}
    for name in sorted(secret_names(extra_names)):
        value = os.environ.get(name, "")
        if len(value) >= MIN_LEN and value not in found:
            found[value] = name
    return sorted(((n, v) for v, n in found.items()), key=lambda nv: len(nv[1]), reverse=True)


def redact(text: str, extra_names: tuple[str, ...] = ()) -> str:
    """`text` with the value of every secret variable replaced by ${NAME}."""
    for name, value in secret_values(extra_names):
        if value in text:
            text = text.replace(value, mask(name))
    return text


def redact_obj(obj: T, extra_names: tuple[str, ...] = ()) -> T:
    """`redact` applied to every string of a nested structure (dict keys too): masked before it is
    serialised, so YAML and JSON writers quote the masks as they need."""
    if isinstance(obj, str):
        return redact(obj, extra_names)  # type: ignore[return-value]
    if isinstance(obj, dict):
        return {redact_obj(k, extra_names): redact_obj(v, extra_names) for k, v in obj.items()}  # type: ignore[return-value]
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v, extra_names) for v in obj)  # type: ignore[return-value]
    return obj


def expand(obj: T) -> T:
    """The inverse of `redact_obj` in a trial: every ${NAME} of a secret variable set here becomes its
    value again (references to other variables, and to unset ones, stay as written)."""
    if isinstance(obj, str):
        names = secret_names()

        def value(m: re.Match) -> str:
            return os.environ[m.group(1)] if m.group(1) in names and m.group(1) in os.environ else m.group(0)

        return _REFERENCE.sub(value, obj)  # type: ignore[return-value]
    if isinstance(obj, dict):
        return {expand(k): expand(v) for k, v in obj.items()}  # type: ignore[return-value]
    if isinstance(obj, (list, tuple)):
        return type(obj)(expand(v) for v in obj)  # type: ignore[return-value]
    return obj


# ----------------------------------------------------------------------------- exceptions


def _chain(exc: BaseException) -> list[BaseException]:
    """`exc` and every exception it was raised from or during."""
    seen: list[BaseException] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is not None and all(e is not s for s in seen):
            seen.append(e)
            stack += [e.__cause__, e.__context__]
    return seen


def _carries(exc: BaseException, values: list[str]) -> bool:
    """Whether this one exception holds a secret value in its text or its pickle (what Ray keeps as
    error.pkl; an HTTP error's attributes can hold the request with its headers)."""
    from ray import cloudpickle

    try:
        raw = cloudpickle.dumps(exc)
    except Exception:  # noqa: BLE001 - what cannot be pickled is replaced by what can
        return True
    return any(v in str(exc) or v.encode() in raw for v in values)


def _leaks(exc: BaseException) -> bool:
    """Whether `exc` would carry a secret into what Ray records: its formatted traceback (causes
    included) or the exceptions themselves."""
    import traceback

    values = [v for _, v in secret_values()]
    text = "".join(traceback.format_exception(exc))
    return any(v in text for v in values) or any(_carries(e, values) for e in _chain(exc))


@functools.cache
def _stand_in(cls: type) -> type:
    """A class named like `cls` that takes one message (for exception types whose constructor wants
    more): results.csv's error_type and the traceback's last line still name the original type."""
    return type(cls.__name__, (Exception,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})


def masked_exception(exc: BaseException, _done: dict[int, BaseException] | None = None) -> BaseException:
    """A copy of `exc` that holds only masked text: the same type (or a stand-in of the same name),
    the masked message, the original traceback, and its causes masked the same way. Nothing else of
    the original is kept (an HTTP error's attributes can hold the request with its headers)."""
    done = {} if _done is None else _done
    if id(exc) in done:
        return done[id(exc)]
    message, values = redact(str(exc)), [v for _, v in secret_values()]
    # The same type from its own arguments masked (KeyError's quoting kept), else from the masked message,
    # else a stand-in; the first that says exactly the masked message and holds nothing secret.
    makers = (lambda: type(exc)(*redact_obj(exc.args)), lambda: type(exc)(message),
              lambda: _stand_in(type(exc))(message))
    for make in makers:
        try:
            new = make()
        except Exception:  # noqa: BLE001 - any constructor that does not take these arguments
            continue
        if str(new) == message and not _carries(new, values):
            break
    done[id(exc)] = new = new.with_traceback(exc.__traceback__)
    if exc.__cause__ is not None:
        new.__cause__ = masked_exception(exc.__cause__, done)
    if exc.__context__ is not None and not exc.__suppress_context__:
        new.__context__ = masked_exception(exc.__context__, done)
    new.__suppress_context__ = exc.__suppress_context__
    return new


def masking_errors(fn: Callable[..., T]) -> Callable[..., T]:
    """Decorate a trial's entry point: an exception that would carry a secret out of it (into Ray's
    error.txt / error.pkl, the worker's log, results.csv) leaves masked; any other leaves untouched."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        masked = None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not _leaks(exc):
                raise
            masked = masked_exception(exc)
        raise masked  # outside the except block: the original is not attached as its context

    return wrapper


# ----------------------------------------------------------------------------- console


class MaskedStream:
    """A text stream (sys.stdout / sys.stderr of the driver) that masks every write; everything else
    is the wrapped stream's (isatty, encoding, fileno, flush)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
