"""A full disk: a sweep on a real small filesystem (tmpfs, mounted for the test) stops at the first write
that does not fit, in one line (where, how much is free, how much the sweep needs, the --resume command),
exit code 3, no traceback, results.csv intact; once the filesystem is larger, --resume finishes the sweep.
Before: 7,050 lines of output, 253 tracebacks, exit 1, the driver's own handler crashing on the full disk."""

from __future__ import annotations

import errno
import re
import shlex
import subprocess

import pytest
from helpers import read_csv, run_sweep, tmpfs

from harness.diskfull import DiskFull, disk_full, lora_params, mb, resume_command, sweep_bytes
from trainables.models import resolve_model

# One trial (r=4: its checkpoint, LoRA weights and AdamW's moments, is 14.6 MB), 2 steps, 2 reports.
ONE_TRIAL = ["data.train=alpaca/alpaca_en_demo.json", "data.eval_size=4", "selection.n=4", "train.batch_size=2",
             "train.max_seq_len=128", "wandb.enabled=false", "scheduler.type=fifo", "search.num_samples=1",
             "search.space={lora.r: {choice: [4]}, lora.alpha: {tie: lora.r, times: 2}}"]


def test_the_estimate_counts_what_a_trial_trains():
    # trainable_params that trials of the embedded model report (results.csv) at r=8 and r=4
    path = resolve_model("smollm2-135m-instruct")
    assert lora_params(path, "all-linear", 8) == 2442240
    assert lora_params(path, ["q_proj", "v_proj"], 8) == 30 * 8 * ((576 + 576) + (576 + 192))
    params = lora_params(path, "all-linear", 4)
    # 1 trial: 2 best checkpoints + the latest + the adapter + 1 MB, and one checkpoint being written
    assert sweep_bytes(params, 1, 2, 2, True) == 4 * params * 12 + params * 4 + 2**20


def test_out_of_space_is_recognised_however_it_is_wrapped():
    assert disk_full(OSError(errno.ENOSPC, "No space left on device", "/x/results.csv")).filename == "/x/results.csv"
    assert disk_full(OSError(errno.EDQUOT, "Disk quota exceeded")) is not None
    # pyarrow's text (no errno), wrapped by Ray, chained by Tune
    pyarrow = OSError("[Errno 28] Error writing bytes to file. Detail: [errno 28] No space left on device")
    try:
        try:
            raise pyarrow
        except OSError as e:
            raise RuntimeError("The Ray Tune run failed") from e
    except RuntimeError as wrapped:
        assert disk_full(wrapped) is pyarrow
    assert disk_full(OSError(errno.EACCES, "Permission denied")) is None and disk_full(ValueError("x")) is None
    assert resume_command("python -m harness.sweep s.yaml", DiskFull("/x")) == "python -m harness.sweep s.yaml --resume"
    assert resume_command("python -m harness.sweep s.yaml --resume", DiskFull("/x", errored=True)) == (
        "python -m harness.sweep s.yaml --resume --retry-errored")


@pytest.mark.slow
def test_a_full_disk_ends_the_sweep_in_one_line_and_resumes_once_there_is_room(tmp_path):
    with tmpfs(tmp_path / "disk", "10m") as disk:
        args = ["sweeps/smoke.yaml", f"output.dir={disk}", "name=full", *ONE_TRIAL, "--no-report"]
        run_dir = disk / "full"
        need = sweep_bytes(lora_params(resolve_model("smollm2-135m-instruct"), "all-linear", 4), 1, 2, 2, True)
        proc = run_sweep(*args)
        said = proc.stdout + proc.stderr
        assert proc.returncode == 3, said[-3000:]
        command = "python -m harness.sweep " + " ".join(shlex.quote(a) for a in args) + " --resume"
        assert re.fullmatch(
            re.escape(f"error: disk full: no space left on the device of {run_dir} (") + r"\d+ MB free of 10 MB"
            + re.escape(f"); the sweep needs about {mb(need)} there (the plan's estimate); free some space, or move "
                        f"{run_dir} to a larger disk and point output.dir there, then continue with: {command}"),
            proc.stderr.strip().splitlines()[-1]), proc.stderr[-2000:]
        assert f"warning: output.dir: the sweep needs about {mb(need)} but {run_dir.parent} has" in proc.stderr
        assert "Traceback" not in said and not (run_dir / "driver_error.txt").exists()
        assert [r["status"] for r in read_csv(run_dir / "results.csv")] in (["RUNNING"], ["PENDING"])

        subprocess.run(["mount", "-o", f"remount,size={need // 2**20 + 20}m", str(disk)], check=True)
        resumed = run_sweep(*args, "--resume")
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert [r["status"] for r in read_csv(run_dir / "results.csv")] == ["TERMINATED"]
