"""resources.pack (packed trials, docs/DESIGN.md "Packed trials"): what is refused before launch, the pack
columns of results.csv, the pack shown per trial, the base key that keeps different bases apart. Fast: no
model, no Ray (the packed sweeps themselves: tests/test_pack_sweep.py)."""

from __future__ import annotations

import io
import subprocess
import sys
from types import SimpleNamespace

import pytest
from helpers import REPO

from harness.display import SweepDisplay
from harness.results import trial_row
from harness.sweep import main
from results_contract import LEAD
from trainables.pack_actor import members_per_pass
from trainables.pack_trial import base_key
from trainables.schema import trial_config

NO_DDP = ("resources.pack: packed trials train in one process, not data-parallel (workers_per_trial: 2); set "
          "resources.pack: 1 or resources.workers_per_trial: 1")


@pytest.mark.parametrize("overrides, expected", [
    (["resources.pack=0"], ["resources.pack: Input should be greater than or equal to 1 (got 0)"]),
    (["resources.pack=2.5"], ["resources.pack: Input should be a valid integer, got a number with a fractional "
                              "part (got 2.5)"]),
    (["resources.pack=two"], ["resources.pack: Input should be a valid integer, unable to parse string as an "
                              "integer (got 'two')"]),
    (["resources.pack=2", "resources.workers_per_trial=2"], [NO_DDP]),
    (["resources.pack=3", "train.compile=true"], ["resources.pack: train.compile is not supported in packed "
                                                  "trials; set resources.pack: 1 or train.compile: false"]),
    (["resources.pack=4", "resources.pack_members_per_pass=5"],
     ["resources.pack_members_per_pass: 5 is more than a pack holds (resources.pack: 4); set it to at most 4"]),
    (["resources.pack_members_per_pass=2"],
     ["resources.pack_members_per_pass: only packed trials have members; set resources.pack above 1 or remove "
      "resources.pack_members_per_pass"]),
    (["resources.pack=4", "resources.pack_members_per_pass=0"],
     ["resources.pack_members_per_pass: Input should be greater than or equal to 1 (got 0)"]),
], ids=["zero", "fraction", "text", "data-parallel", "compile", "pass-over-pack", "pass-unpacked", "pass-zero"])
def test_a_bad_pack_is_refused_in_one_line_naming_the_field(overrides, expected, tmp_path, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["sweeps/smoke.yaml", f"output.dir={tmp_path}", *overrides])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2, err
    assert err == [f"error: {line}" for line in expected]
    assert not list(tmp_path.iterdir())


def test_configs_that_cannot_share_a_base_get_different_keys():
    base = {"name": "k", "resources": {"pack": 3}}
    same = [trial_config(base, p) for p in ({"lora.r": 4, "train.lr": 1e-3}, {"lora.r": 16, "lora.alpha": 3,
                                                                              "train.seed": 7, "lora.dropout": 0})]
    assert base_key(same[0]) == base_key(same[1])  # adapter, optimizer and seed are each member's own
    others = [{"train.max_seq_len": 64}, {"model.quantization": "nf4"}, {"train.bf16": "on"},
              {"resources.cpus_per_trial": 2}, {"lora.target_modules": ["q_proj"]},
              {"resources.pack_members_per_pass": 1}]
    keys = {base_key(trial_config(base, p)) for p in others}
    assert len(keys) == len(others) and base_key(same[0]) not in keys


def test_results_row_has_the_pack_columns_in_the_contracts_order():
    last = {"pack_id": "0a1b2c3d4e-0", "packed_with": "4e095_00001;4e095_00002", "node_id": "n1", "seed": 0,
            "step": 4, "total_steps": 4, "eval_loss": 1.5}
    trial = SimpleNamespace(trial_id="4e095_00000", status="TERMINATED", config={}, last_result=last,
                            error_file=None, run_metadata=SimpleNamespace(num_failures=0))
    row = trial_row(trial, [], [], 4)
    assert [c for c in row if c in LEAD] == list(LEAD)
    assert (row["pack_id"], row["packed_with"]) == ("0a1b2c3d4e-0", "4e095_00001;4e095_00002")
    unpacked = trial_row(SimpleNamespace(**{**vars(trial), "last_result": {"node_id": "n1"}}), [], [], 4)
    assert "pack_id" not in unpacked and "packed_with" not in unpacked  # an unpacked sweep's table is unchanged


def test_the_display_shows_which_trials_share_a_pack():
    from rich.console import Console

    out = io.StringIO()
    display = SweepDisplay(metric="eval_loss", mode="min", searched=[], reports_per_trial=2, total_trials=2,
                           live=False, out=out)
    trials = [SimpleNamespace(trial_id=f"t{i}", config={}, status="RUNNING", last_result={}, error_file=None)
              for i in range(2)]
    for t in trials:
        display.on_trial_start(0, trials, t)
        display.on_trial_result(1, trials, t, {"report": 1, "eval_loss": 2.0, "node": "h", "pack_id": "abc-0"})
    assert "trial t1 report 1/2: eval_loss 2 (best 2) on h in pack abc-0" in out.getvalue()
    buf = io.StringIO()
    Console(file=buf, width=200).print(display.table())
    header = next(ln for ln in buf.getvalue().splitlines() if "trial" in ln and "status" in ln)
    assert "pack" in header and sum("abc-0" in ln for ln in buf.getvalue().splitlines()) == 2


def test_packed_trials_leave_every_cpu_to_their_packs():
    """Two packs of 4 at 1 CPU on a 2-CPU machine: the members' own trials take no CPU, so both packs run
    at once (before: 0.01 CPU each, 2 + 8 x 0.01 > 2, and the second pack waited for the first to end)."""
    from harness.tuner import trial_resources

    packed = trial_resources({"name": "p", "resources": {"pack": 4, "cpus_per_trial": 1}})({}).bundles
    alone = trial_resources({"name": "p", "resources": {"pack": 1, "cpus_per_trial": 1}})({}).bundles
    assert packed == [{"memory": 512 * 2**20}] and alone[0]["CPU"] == 1  # Ray drops the zero CPU
    assert 2 * 1 + 8 * packed[0].get("CPU", 0) <= 2


RETAINED = """
import sys
from trainables.distributed import return_freed_memory
if sys.argv[1] == "fixed":
    assert return_freed_memory()
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
before = rss_mb()
for _ in range(3):  # freed, then asked for again: glibc's default keeps the second one in its heap
    block = bytearray(8 * 2**20)
    del block
print(rss_mb() - before)
"""


def test_a_pack_process_gives_freed_blocks_back_to_the_os():
    """The pack actor fixes glibc's mmap threshold (distributed.return_freed_memory): a freed 8 MiB block
    leaves the process at once, where the default keeps it in the heap after the first one."""
    kept = {how: int(subprocess.run([sys.executable, "-c", RETAINED, how], capture_output=True, text=True,
                                    check=True, cwd=REPO).stdout) for how in ("default", "fixed")}
    assert kept["default"] >= 8 and kept["fixed"] < 2, kept


def test_a_pack_passes_all_members_at_once_on_a_gpu_and_one_at_a_time_on_the_cpu_unless_told():
    assert members_per_pass(None, "cuda") is None  # one forward/backward per round for the whole pack
    assert members_per_pass(None, "cpu") == 1
    assert members_per_pass(3, "cpu") == 3 and members_per_pass(2, "cuda") == 2
