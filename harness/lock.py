"""One live driver per run directory.

`hold(run_dir)` takes an exclusive lock on `<run_dir>/.driver.lock` (flock, on the open file) and writes
the owner into it: pid, host, the process's start time, when it took the lock. The kernel drops the lock
when the owner exits in any way (kill -9, a machine restart), so a dead driver never leaves it stuck;
the file itself stays and only says who held it last. A second driver (with or without --resume) finds
the lock held and is refused in one line naming the running one.

The lock file is opened close-on-exec, so the processes the driver starts (Ray's) do not inherit it. On a
filesystem without flock (some network mounts) the file's owner is checked instead: a driver on this host
whose pid is gone, or belongs to a process started at another time, no longer holds it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

LOCK_NAME = ".driver.lock"
_held: dict[Path, tuple[int, bool, bool]] = {}  # run dir -> (fd, flock or not, whether hold() created the dir)


class RunDirBusy(RuntimeError):
    """Another live driver owns the run directory; the message names it."""


def _start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), or None when there is no such process."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def owner_alive(owner: dict[str, Any]) -> bool:
    """Whether the driver recorded in a lock file still runs. Only a process on this host can be checked:
    one elsewhere counts as alive."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return True
    started = _start_time(owner["pid"])
    # The same pid with another start time is a new process that reused the number.
    return started is not None and abs(started - float(owner.get("process_start", started))) < 1.0


def read_owner(path: Path) -> dict[str, Any]:
    """The owner a lock file names; {} while it is being written or when unreadable. Retries briefly: the
    owner writes it just after taking the lock."""
    for _ in range(20):
        try:
            owner = json.loads(path.read_text(encoding="utf-8") or "null")
        except (OSError, ValueError):
            owner = None
        if isinstance(owner, dict):
            return owner
        time.sleep(0.05)
    return {}


def describe(owner: dict[str, Any]) -> str:
    if not owner:
        return "a driver that has not said who it is yet"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("locked_at", 0)))
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, running since {when}"


def busy_message(run_dir: Path, owner: dict[str, Any]) -> str:
    pid = owner.get("pid")
    stop = f"stop it (kill {pid}{'' if owner.get('host') == socket.gethostname() else ' on ' + str(owner.get('host'))})"
    return (f"output.dir: {run_dir} is in use by another driver ({describe(owner)}); wait for it to finish, or "
            f"{stop if pid else 'stop it'} and continue with --resume")


def _write_owner(fd: int) -> None:
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _start_time(os.getpid()),
             "locked_at": time.time()}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
    except OSError:  # a full disk: the lock holds all the same, a second driver just cannot name us
        pass


def _try_flock(path: Path) -> int | None:
    """The fd of `path` locked by this process; None when another process holds it. Raises OSError
    (ENOLCK, EOPNOTSUPP...) where the filesystem has no flock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except OSError:
            os.close(fd)
            raise
        try:  # the file may have been replaced between open and flock (a stale lock broken by someone)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _try_exclusive_file(path: Path) -> int | None:
    """Without flock: create the file exclusively; a file whose owner is gone is replaced."""
    for _ in range(2):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            if owner_alive(read_owner(path)):
                return None
            path.unlink(missing_ok=True)
    return None


def hold(run_dir: Path) -> Path:
    """Make this process the owner of `run_dir` (created if needed) until it exits; raises RunDirBusy
    naming the live owner. Taking a lock this process already holds is a no-op."""
    run_dir = Path(run_dir).resolve()
    path = run_dir / LOCK_NAME
    if run_dir in _held:
        return path
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    flocked = True
    try:
        fd = _try_flock(path)
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
            raise
        flocked, fd = False, _try_exclusive_file(path)
    if fd is None:
        if created:  # refused: leave no trace of this attempt
            with contextlib.suppress(OSError):
                run_dir.rmdir()
        raise RunDirBusy(busy_message(run_dir, read_owner(path)))
    _write_owner(fd)
    _held[run_dir] = (fd, flocked, created)
    return path


def release(run_dir: Path, tidy: bool = False) -> None:
    """Give the lock up before the process ends (the kernel drops a flock at exit anyway). `tidy`: also
    remove the lock file, and the run directory when hold() created it and nothing else was written."""
    run_dir = Path(run_dir).resolve()
    fd, flocked, created = _held.pop(run_dir, (None, True, False))
    if fd is None:
        return
    if tidy or not flocked:  # without flock the file is the lock: it must go
        (run_dir / LOCK_NAME).unlink(missing_ok=True)
    os.close(fd)
    if tidy and created:
        with contextlib.suppress(OSError):
            run_dir.rmdir()  # only when empty
