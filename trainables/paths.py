"""Where data and caches live. One place, so tests, trials and the driver agree."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dirs() -> list[Path]:
    """Directories searched for relative data paths, in order."""
    dirs = []
    if os.environ.get("HARNESS_DATA_DIR"):
        dirs.append(Path(os.environ["HARNESS_DATA_DIR"]).expanduser())
    dirs += [Path.cwd(), REPO_ROOT.parent / "shared" / "data"]
    return dirs


def find_data(path: str) -> Path | None:
    """Resolve a data path: absolute as is, relative against data_dirs(). None if nowhere."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p if p.exists() else None
    for d in data_dirs():
        if (d / p).exists():
            return (d / p).resolve()
    return None


def cache_dir(*parts: str) -> Path:
    """Content-keyed caches (converted models, tokenized data, judge replies). HARNESS_CACHE_DIR overrides."""
    root = Path(os.environ.get("HARNESS_CACHE_DIR", Path.home() / ".cache" / "harness")).expanduser()
    d = root.joinpath(*parts)
    d.mkdir(parents=True, exist_ok=True)
    return d


def atomic_write_text(path: Path, text: str) -> None:
    """Write via temp file + rename so a kill never leaves a half-written file. Every text the project
    writes goes through here, so here secret values are masked (trainables/secrets.py)."""
    from trainables.secrets import redact

    path, text = Path(path), redact(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temp dir next to `final`; on success move it into place (first writer wins)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        yield tmp
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: keep theirs
            pass
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# trials/<id>/.ended: written by the driver (harness/results.py) the moment a trial ends, holding how:
# "complete" (ran to its end or was stopped by the scheduler) or "error" (failed for good). A trial that
# Ray resumes after a kill reads it: a complete trial must never train again.
ENDED = ".ended"


def trial_ended(trial_dir: Path) -> str | None:
    """How the trial in `trial_dir` ended ("complete" or "error"), or None while it has not."""
    try:
        return (Path(trial_dir) / ENDED).read_text(encoding="utf-8").strip() or "complete"  # older runs: empty
    except OSError:
        return None


def had_ended(step: int, total_steps: float, trial_dir: Path) -> bool:
    """Whether a restored trial had finished, or been stopped by the scheduler (the driver's .ended marker),
    before the driver died: then it says its last report again (its own figures) and trains nothing."""
    return step >= total_steps or trial_ended(trial_dir) == "complete"


# Ray hands a reused worker its next trial once the last trial's thread has ended, waiting
# TUNE_FUNCTION_THREAD_TIMEOUT_S (default 2 s) and failing that next trial otherwise ("Trainable runner reuse
# requires reset_config()"); a trial's clean-up alone took longer on a loaded 2-core machine. Here, not in
# trainables/distributed.py, because a packed trial's process (trainables/pack_trial.py) never imports torch.
REUSE_WAIT_S = 300  # the most a reused worker waits for its last trial's clean-up before taking the next
