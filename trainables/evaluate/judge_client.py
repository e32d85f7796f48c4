"""Calls to an OpenAI-compatible chat endpoint: on-disk cache, retries with backoff, bounded concurrency.

- The API key is read from the environment variable named in the config, at call time only; it is
  never written to the cache, the trial dir or a log.
- Cache: one JSON file per (endpoint, judge model, messages, temperature, max_tokens) under
  cache_dir("judge") (the endpoint too: local servers answer to any model name, so "judge" on two
  servers may be two different models),
  written atomically, so a rerun (or another trial judging the same answer) never pays twice.
  Only completed replies are cached; errors are retried next run.
- Errors (connection refused, timeouts, 5xx, 429, malformed bodies) are retried with exponential
  backoff and jitter; after the last try the failure is returned as a Reply with `error` set and the
  run goes on. Client errors that a retry cannot fix (400, 401, 403, 404, 422) fail at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainables.paths import atomic_write_text, cache_dir
from trainables.secrets import redact

if TYPE_CHECKING:
    from trainables.evaluate.config import JudgeConfig

log = logging.getLogger(__name__)
Messages = list[dict[str, str]]


@dataclass
class Reply:
    text: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    error: str | None = None
    attempts: int = 0


class MalformedReply(RuntimeError):
    """The endpoint answered, but not with a chat completion (garbage body, no choices)."""


def cache_key(model: str, messages: Messages, temperature: float, max_tokens: int,
              base_url: str | None = None) -> str:
    blob = json.dumps({"model": model, "messages": messages, "temperature": temperature,
                       "max_tokens": max_tokens, "base_url": (base_url or "").rstrip("/")},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _fatal(exc: Exception) -> bool:
    import openai

    return isinstance(exc, (openai.BadRequestError, openai.AuthenticationError, openai.PermissionDeniedError,
                            openai.NotFoundError, openai.UnprocessableEntityError))


def _short(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


class JudgeClient:
    def __init__(self, cfg: JudgeConfig, sleep: Any = time.sleep):
        import openai

        self.cfg = cfg
        self._sleep = sleep
        key = os.environ.get(cfg.api_key_env)
        if not key:
            # Local servers (llama.cpp, vLLM) accept any key; a hosted API will answer 401 (recorded).
            log.warning("judge: env var %s is not set; sending a placeholder key", cfg.api_key_env)
        # max_retries=0: the retry policy (and its record) is ours, not the SDK's.
        self._client = openai.OpenAI(base_url=cfg.base_url, api_key=key or "not-set",
                                     timeout=cfg.timeout, max_retries=0)
        self._dir = cache_dir("judge") if cfg.cache else None

    def _cache_path(self, messages: Messages):
        key = cache_key(self.cfg.model, messages, self.cfg.temperature, self.cfg.max_tokens, self.cfg.base_url)
        return self._dir / key[:2] / f"{key}.json" if self._dir else None

    def _call(self, messages: Messages) -> tuple[str, int, int]:
        resp = self._client.chat.completions.create(
            model=self.cfg.model, messages=messages,  # type: ignore[arg-type]
            temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens,
        )
        choices = getattr(resp, "choices", None)
        if not choices or getattr(choices[0], "message", None) is None:
            raise MalformedReply(f"no choices in response: {str(resp)[:120]!r}")
        text = choices[0].message.content
        if not isinstance(text, str):
            raise MalformedReply("message without text content")
        usage = getattr(resp, "usage", None)
        return text, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)

    def ask(self, messages: Messages) -> Reply:
        path = self._cache_path(messages)
        if path is not None and path.exists():
            try:
                hit = json.loads(path.read_text(encoding="utf-8"))
                return Reply(hit["text"], hit["prompt_tokens"], hit["completion_tokens"], cached=True)
            except (ValueError, KeyError):
                pass  # unreadable entry: ask again and overwrite it
        error = None
        for attempt in range(self.cfg.max_retries + 1):
            try:
                text, p_tok, c_tok = self._call(messages)
            except Exception as exc:  # every failure is recorded; none may stop the trial
                error = redact(_short(exc), (self.cfg.api_key_env,))  # a server may echo what it was sent
                if _fatal(exc) or attempt == self.cfg.max_retries:
                    return Reply(None, error=error, attempts=attempt + 1)
                delay = min(self.cfg.backoff * 2**attempt, self.cfg.backoff_max)
                self._sleep(delay * random.uniform(0.5, 1.0))  # jitter: concurrent retries spread out
                continue
            if path is not None:
                atomic_write_text(path, json.dumps({"model": self.cfg.model, "messages": messages, "text": text,
                                                    "prompt_tokens": p_tok, "completion_tokens": c_tok},
                                                   ensure_ascii=False))
            return Reply(text, p_tok, c_tok, attempts=attempt + 1)
        return Reply(None, error=error, attempts=self.cfg.max_retries + 1)

    def ask_many(self, requests: list[Messages]) -> list[Reply]:
        """Replies in request order, at most cfg.concurrency requests in flight."""
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.cfg.concurrency, len(requests))) as pool:
            return list(pool.map(self.ask, requests))

    def close(self) -> None:
        self._client.close()
