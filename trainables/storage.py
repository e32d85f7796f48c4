"""Where a sweep's files live: a local or shared directory, or a URI (s3://, gs://, file://).

A local path (a shared filesystem such as NFS on a cluster) is written in place. A URI goes through
pyarrow filesystems, the same way Ray Tune stores its own state there: each process writes its files
into a local working copy (`workdir`) and uploads what changed (`push`). `pull` fetches the small
files back (results, histories, configs, the Optuna study), so a driver on any machine can resume a
sweep or analyse it from the URI alone.

Layout under the location (both kinds):
    sweep.yaml results.csv best.yaml optuna.db wandb/ report/   the driver's files
    trials/<trial_id>/                                          config.json metrics.jsonl (driver),
                                                                selected_ids.json adapter/ ... (trial)
    tune/                                                       Ray Tune's experiment state, checkpoints
    train/<trial_id>/                                           Ray Train runs of multi-worker trials
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

# Written and read by Ray itself, or large and never needed to resume or analyse a sweep.
NOT_PULLED = ("tune", "train", "adapter", "wandb")


def is_uri(location: str) -> bool:
    return "://" in location


class Storage:
    """A sweep location. `mirror`: the local working copy when the location is a URI (default: a
    scratch directory under the harness cache, keyed by the location)."""

    def __init__(self, location: str, mirror: str | Path | None = None):
        self.location = location.rstrip("/")
        self.remote = is_uri(self.location)
        if self.remote:
            import pyarrow.fs

            self.fs, self.root = pyarrow.fs.FileSystem.from_uri(self.location)
            if mirror is None:
                from trainables.paths import cache_dir

                mirror = cache_dir("scratch", hashlib.sha1(self.location.encode()).hexdigest()[:12])
            self.local = Path(mirror)
        else:
            self.local = Path(self.location)
        self._pushed: dict[str, tuple[int, int]] = {}  # relative path -> (mtime_ns, size) last uploaded
        self._last_push = 0.0

    def uri(self, rel: str = "") -> str:
        """The location of `rel` as Ray expects it (a URI, or an absolute path)."""
        return f"{self.location}/{rel}" if rel else self.location

    def workdir(self, rel: str = "") -> Path:
        """The local directory to write `rel` into (the location itself when it is a local path)."""
        d = self.local / rel if rel else self.local
        d.mkdir(parents=True, exist_ok=True)
        return d

    def push(self, rel: str = "", every_s: float = 0.0) -> int:
        """Upload the files under workdir(rel) that changed since the last push; returns how many.
        `every_s` throttles calls that come with every report (the final push passes 0)."""
        if not self.remote or time.monotonic() - self._last_push < every_s:
            return 0
        import pyarrow.fs

        self._last_push = time.monotonic()
        base = self.local / rel if rel else self.local
        n = 0
        for path in sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")):
            key = path.relative_to(self.local).as_posix()
            stat = path.stat()
            if self._pushed.get(key) == (stat.st_mtime_ns, stat.st_size):
                continue
            target = f"{self.root}/{key}"
            self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            pyarrow.fs.copy_files(str(path), target, source_filesystem=pyarrow.fs.LocalFileSystem(),
                                  destination_filesystem=self.fs)
            self._pushed[key] = (stat.st_mtime_ns, stat.st_size)
            n += 1
        return n

    def pull(self, skip: tuple[str, ...] = NOT_PULLED) -> int:
        """Download the location's files into the working copy, except directories named in `skip`
        (Ray's own state, adapters, W&B runs). Returns how many files came down."""
        if not self.remote:
            return 0
        import pyarrow.fs

        selector = pyarrow.fs.FileSelector(self.root, recursive=True, allow_not_found=True)
        n = 0
        for info in self.fs.get_file_info(selector):
            rel = info.path[len(self.root):].lstrip("/")
            if info.type != pyarrow.fs.FileType.File or set(rel.split("/")[:-1]) & set(skip):
                continue
            dest = self.local / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            pyarrow.fs.copy_files(info.path, str(dest), source_filesystem=self.fs,
                                  destination_filesystem=pyarrow.fs.LocalFileSystem())
            stat = dest.stat()
            self._pushed[rel] = (stat.st_mtime_ns, stat.st_size)  # identical to the remote copy
            n += 1
        return n

    def read_text(self, rel: str) -> str | None:
        """A file's text at the location (not the local copy), or None when it is not there."""
        if not self.remote:
            path = self.local / rel
            return path.read_text(encoding="utf-8") if path.exists() else None
        import pyarrow.fs

        path = f"{self.root}/{rel}"
        if self.fs.get_file_info(path).type != pyarrow.fs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as f:
            return f.read().decode("utf-8")
