"""Calls to an OpenAI-compatible chat endpoint: on-disk cache, retries with backoff, bounded concurrency,
schema-constrained verdicts where the endpoint accepts them, and a time budget per trial.

- The API key is read from the environment variable named in the config, at call time only; it is
  never written to the cache, the trial dir or a log.
- Cache: one JSON file per (endpoint, judge model, messages, temperature, max_tokens, response format)
  under cache_dir("judge") (the endpoint too: local servers answer to any model name, so "judge" on two
  servers may be two different models), written atomically, so a rerun (or another trial judging the
  same answer) never pays twice. Only completed replies are cached; errors are retried next run.
- Structured output: with a schema, the first request to an endpoint tries OpenAI's
  `response_format: {type: json_schema}` (OpenAI, llama.cpp's llama-server, vLLM), then
  `{type: json_object, schema}` (llama-cpp-python's server), then plain text; a format the endpoint
  refuses (HTTP 400/422, or an error naming response_format) or accepts without keeping to it (the reply
  is not JSON) is passed over. The decision is kept per endpoint and model (in memory and, unless it
  rests on replies that were not JSON, which a reply cut by max_tokens also is, in
  cache_dir("judge")/formats.json), so it is made once.
- Errors (connection refused, timeouts, 5xx, 429, malformed bodies) are retried with exponential
  backoff and jitter; after the last try the failure is returned as a Reply with `error` set and the
  run goes on. Client errors that a retry cannot fix (400, 401, 403, 404, 422) fail at once.
- Budget (ask_many): once no reply has succeeded for `stall_seconds`, once `max_seconds` have passed,
  or once the first `concurrency` requests (at least 2) all failed with none answered, the requests left
  are not sent (Reply.sent False); an attempt in flight is cut at the deadline. A judge that is down or
  hangs thus costs seconds to `stall_seconds` per trial, not every request's retries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainables.paths import atomic_write_text, cache_dir
from trainables.secrets import redact

if TYPE_CHECKING:
    from trainables.schema.eval import JudgeConfig

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]
FORMATS = ("json_schema", "json_object")  # tried in this order; "text" = no response_format
_FORMATS_SEEN: dict[str, str] = {}  # endpoint key -> the format it keeps to (this process)
_LOCK = threading.Lock()


@dataclass
class Reply:
    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None
    attempts: int = 0
    format: str = "text"  # the response_format the reply was asked with
    sent: bool = True  # False: not sent, the budget was spent (error says which)
    refused: bool = False  # the endpoint refused the response_format


class MalformedReply(RuntimeError):
    """The endpoint answered, but not with a chat completion (garbage body, no choices)."""


def cache_key(model: str, messages: Messages, temperature: float, max_tokens: int,
              base_url: str | None = None, response_format: dict | None = None) -> str:
    doc = {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens,
           "base_url": (base_url or "").rstrip("/")}
    if response_format is not None:  # absent for plain text: keys of earlier runs stay valid
        doc["response_format"] = response_format
    blob = json.dumps(doc, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def response_format(fmt: str, schema: dict) -> dict | None:
    if fmt == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "verdict", "strict": True, "schema": schema}}
    if fmt == "json_object":
        return {"type": "json_object", "schema": schema}
    return None


def _fatal(exc: Exception) -> bool:
    import openai

    return isinstance(exc, (openai.BadRequestError, openai.AuthenticationError, openai.PermissionDeniedError,
                            openai.NotFoundError, openai.UnprocessableEntityError))


def _refusal(exc: Exception) -> bool:
    """The endpoint rejected the request's response_format (llama.cpp's old server answers 500 naming it)."""
    import openai

    said = str(exc).lower()
    return isinstance(exc, (openai.BadRequestError, openai.UnprocessableEntityError)) or (
        isinstance(exc, openai.InternalServerError) and ("response_format" in said or "json_schema" in said))


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _is_json(text: str | None) -> bool:
    try:
        return isinstance(json.loads((text or "").strip()), dict)
    except ValueError:
        return False


class Budget:
    """When the requests of one judging run stop being sent (see the module docstring). Thread-safe."""

    def __init__(self, stall_seconds: float, max_seconds: float | None, breaker: int):
        self.t0 = self.last_ok = time.monotonic()
        self.stall, self.max, self.breaker = stall_seconds, max_seconds, breaker
        self.ok = self.failed = 0
        self.first_error: str | None = None
        self._lock = threading.Lock()

    def remaining(self) -> float:
        now = time.monotonic()
        left = self.last_ok + self.stall - now
        return min(left, self.t0 + self.max - now) if self.max else left

    def spent(self) -> str | None:
        """Why no more attempts start, or None."""
        with self._lock:
            if self.ok == 0 and self.failed >= self.breaker:
                return f"the judge failed the first {self.failed} requests and answered none ({self.first_error})"
        if self.max and time.monotonic() >= self.t0 + self.max:
            return f"eval.judge.max_seconds ({self.max:g} s) reached"
        if self.remaining() <= 0:
            return f"no reply from the judge for eval.judge.stall_seconds ({self.stall:g} s)"
        return None

    def done(self, error: str | None) -> None:
        with self._lock:
            if error is None:
                self.ok += 1
                self.last_ok = time.monotonic()
            else:
                self.failed += 1
                self.first_error = self.first_error or error


class JudgeClient:
    def __init__(self, cfg: JudgeConfig, sleep: Any = time.sleep):
        import openai

        self.cfg = cfg
        self._sleep = sleep
        key = os.environ.get(cfg.api_key_env)
        if not key and not cfg.serve:  # the server the driver started for the sweep needs no key
            # Local servers (llama.cpp, vLLM) accept any key; a hosted API will answer 401 (recorded).
            log.warning("judge: env var %s is not set; sending a placeholder key", cfg.api_key_env)
        # max_retries=0: the retry policy (and its record) is ours, not the SDK's.
        self._client = openai.OpenAI(base_url=cfg.base_url, api_key=key or "not-set",
                                     timeout=cfg.timeout, max_retries=0)
        self._dir = cache_dir("judge") if cfg.cache else None
        self._endpoint = f"{cfg.base_url.rstrip('/')}|{cfg.model}"
        self.budget: Budget | None = None

    # ------------------------------------------------------------------ response formats

    def _formats_file(self):
        return cache_dir("judge") / "formats.json"

    def known_format(self) -> str | None:
        """The format this endpoint keeps to, if already found out (here or by an earlier run)."""
        with _LOCK:
            if self._endpoint not in _FORMATS_SEEN and self._dir is not None:
                try:
                    saved = json.loads(self._formats_file().read_text(encoding="utf-8"))
                    if saved.get(self._endpoint) in (*FORMATS, "text"):
                        _FORMATS_SEEN[self._endpoint] = saved[self._endpoint]
                except (OSError, ValueError, AttributeError):
                    pass
            return _FORMATS_SEEN.get(self._endpoint)

    def _decide(self, fmt: str, persist: bool = True) -> None:
        with _LOCK:
            _FORMATS_SEEN[self._endpoint] = fmt
            if self._dir is None or not persist:
                return
            try:
                saved = json.loads(self._formats_file().read_text(encoding="utf-8"))
            except (OSError, ValueError):
                saved = {}
            saved = saved if isinstance(saved, dict) else {}
            atomic_write_text(self._formats_file(), json.dumps({**saved, self._endpoint: fmt}, indent=1))

    def _probe(self, messages: Messages, schema: dict) -> Reply:
        """The first request with a schema: find the form of response_format this endpoint keeps to."""
        accepted: Reply | None = None
        for fmt in FORMATS:
            rep = self._ask(messages, fmt, schema)
            if rep.refused:
                continue
            if rep.error is not None:
                return rep  # a failure that says nothing about the format: decide on a later request
            if _is_json(rep.text):
                self._decide(fmt)
                return rep
            accepted = accepted or rep  # accepted, not kept to: try the next form once
        if accepted is None:  # both forms refused: this endpoint takes no response_format
            accepted = self._ask(messages, "text", None)
            if accepted.error is not None:
                return accepted
            self._decide("text")
            return accepted
        # Accepted but not kept to: maybe ignored, maybe a reply cut by max_tokens; text for this process only.
        self._decide("text", persist=False)
        return accepted

    # ------------------------------------------------------------------ requests

    def _cache_path(self, messages: Messages, rf: dict | None):
        key = cache_key(self.cfg.model, messages, self.cfg.temperature, self.cfg.max_tokens, self.cfg.base_url, rf)
        return self._dir / key[:2] / f"{key}.json" if self._dir else None

    def _call(self, messages: Messages, rf: dict | None, timeout: float) -> tuple[str, int, int]:
        extra = {"response_format": rf} if rf is not None else {}
        resp = self._client.chat.completions.create(
            model=self.cfg.model, messages=messages,  # type: ignore[arg-type]
            temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens, timeout=timeout, **extra,
        )
        choices = getattr(resp, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise MalformedReply(f"no choices in response: {str(resp)[:120]!r}")
        text = choices[0].message.content
        if not isinstance(text, str):
            raise MalformedReply("message without text content")
        usage = getattr(resp, "usage", None)
        return text, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)

    def _timeout(self) -> float:
        left = self.budget.remaining() if self.budget else self.cfg.timeout
        return max(0.1, min(self.cfg.timeout, left))

    def _ask(self, messages: Messages, fmt: str, schema: dict | None) -> Reply:
        rf = response_format(fmt, schema) if schema is not None else None
        path = self._cache_path(messages, rf)
        if path is not None and path.exists():
            try:
                hit = json.loads(path.read_text(encoding="utf-8"))
                return Reply(hit["text"], hit["prompt_tokens"], hit["completion_tokens"], cached=True, format=fmt)
            except (ValueError, KeyError):
                pass  # unreadable entry: ask again and overwrite it
        error, attempt = None, 0
        for attempt in range(self.cfg.max_retries + 1):
            why = self.budget.spent() if self.budget else None
            if why:
                return Reply(None, error=error or f"not sent: {why}", attempts=attempt, format=fmt, sent=attempt > 0)
            try:
                text, p_tok, c_tok = self._call(messages, rf, self._timeout())
            except Exception as exc:  # every failure is recorded; none may stop the trial
                error = redact(_short(exc), (self.cfg.api_key_env,))  # a server may echo what it was sent
                if rf is not None and _refusal(exc):
                    return Reply(None, error=error, attempts=attempt + 1, format=fmt, refused=True)
                if _fatal(exc) or attempt == self.cfg.max_retries:
                    break
                delay = min(self.cfg.backoff * 2**attempt, self.cfg.backoff_max)
                self._sleep(delay * random.uniform(0.5, 1.0))  # jitter: concurrent retries spread out
                continue
            if path is not None:
                atomic_write_text(path, json.dumps({"model": self.cfg.model, "messages": messages, "text": text,
                                                    "prompt_tokens": p_tok, "completion_tokens": c_tok,
                                                    "response_format": rf}, ensure_ascii=False))
            return Reply(text, p_tok, c_tok, attempts=attempt + 1, format=fmt)
        return Reply(None, error=error, attempts=attempt + 1, format=fmt)

    def ask(self, messages: Messages, schema: dict | None = None) -> Reply:
        """One request; with a schema, a schema-constrained reply where the endpoint keeps to one."""
        if schema is None or not self.cfg.structured:
            rep = self._ask(messages, "text", None)
        else:
            fmt = self.known_format()
            rep = self._probe(messages, schema) if fmt is None else self._ask(messages, fmt, schema)
        if self.budget is not None and rep.sent and not rep.cached:
            self.budget.done(rep.error)
        return rep

    def ask_many(self, requests: list[Messages], schema: dict | None = None) -> list[Reply]:
        """Replies in request order, at most cfg.concurrency requests in flight, within the budget."""
        if not requests:
            return []
        c = self.cfg
        self.budget = Budget(c.stall_seconds, c.max_seconds, breaker=max(2, c.concurrency))
        first: list[Reply] = []
        if schema is not None and c.structured and self.known_format() is None:
            first = [self.ask(requests[0], schema)]  # find the endpoint's format once, before the rest
        with ThreadPoolExecutor(max_workers=min(c.concurrency, len(requests))) as pool:
            return first + list(pool.map(lambda m: self.ask(m, schema), requests[len(first):]))

    def close(self) -> None:
        self._client.close()
