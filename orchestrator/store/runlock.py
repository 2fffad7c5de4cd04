"""One process per run on SQLite: an exclusive flock(2) on `<db>-runs/<run_id>.lock`, which the OS releases when
the process dies (SIGKILL included). The file holds the holder as JSON ({id, pid, host, since, command}) so the
one refused can be told who holds it.

flock, not fcntl/lockf: a flock belongs to the open file, so two stores in one process exclude each other too,
and closing some other descriptor of the file does not drop it. The file is removed on release; a taker checks
after locking that the path still names the file it locked (else someone removed it meanwhile: try again).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from pathlib import Path

from orchestrator.errors import RunBusy, StoreError
from orchestrator.store.status import Holder


def lock_dir(database: str) -> Path:
    return Path(f"{database}-runs")


def lock_path(database: str, run_id: str) -> Path:
    if not run_id or "/" in run_id or run_id.startswith("."):
        raise StoreError(f"not a run id: {run_id!r}")
    return lock_dir(database) / f"{run_id}.lock"


class RunLock:
    """An exclusive hold on one run, for as long as this object (and this process) lives."""

    def __init__(self, path: Path, fd: int, holder: Holder) -> None:
        self.path, self._fd, self.holder = path, fd, holder

    @classmethod
    def take(cls, database: str, run_id: str, holder: Holder) -> RunLock:
        """Take the run, or RunBusy naming who holds it."""
        path = lock_path(database, run_id)
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the run lock folder {path.parent}: {exc.strerror}") from exc
        for _ in range(50):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if not _lock(fd):
                os.close(fd)
                raise RunBusy(f"run {run_id} is being worked by {_holder_of(path)}; wait for it to "
                              "finish or stop that process first")
            if _same_file(fd, path):
                os.ftruncate(fd, 0)
                os.write(fd, json.dumps(holder.to_json(), sort_keys=True).encode())
                os.fsync(fd)
                return cls(path, fd, holder)
            os.close(fd)  # removed by its last holder between our open and our lock: open the new one
        raise StoreError(f"cannot take the run lock {path}: it keeps being replaced")

    def release(self) -> None:
        if self._fd < 0:
            return
        # Unlink while still holding it: whoever opens the path next gets a new file and a fresh lock.
        with contextlib.suppress(FileNotFoundError):
            if _same_file(self._fd, self.path):
                self.path.unlink()
        os.close(self._fd)
        self._fd = -1


def held_by(database: str, run_id: str) -> Holder | bool | None:
    """Who holds the run now: a Holder, True (held, holder unreadable), or None (nobody: free or never taken)."""
    path = lock_path(database, run_id)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        try:
            # Shared, for an instant: conflicts with the holder's exclusive lock, never with another prober.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _lock(fd: int) -> bool:
    # A prober's shared lock lasts an instant: a few tries tell it from a holder, which stays.
    for attempt in range(5):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if attempt < 4:
                time.sleep(0.005)
    return False


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = path.stat()
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _read(fd: int) -> Holder | None:
    try:
        data = os.pread(fd, 4096, 0)
        return Holder.from_json(json.loads(data)) if data else None
    except (OSError, ValueError, TypeError):
        return None


def _holder_of(path: Path) -> str:
    # The holder writes its name just after locking: give it a moment.
    for _ in range(20):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            break
        try:
            holder = _read(fd)
        finally:
            os.close(fd)
        if holder is not None:
            return holder.describe()
        time.sleep(0.01)
    return "another process (not yet named)"
