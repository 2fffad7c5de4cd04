"""Who works a run, and the status a user sees: `running` only while its owner is alive."""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.secrets import mask_url_passwords
from orchestrator.store.schema import Run


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this host (a zombie counts: it has not been reaped yet)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def command_line() -> str:
    """What this process was started as, for naming it to the one refused (never its environment, nor the
    password of a `--db postgresql://user:password@…`: this is written to the run row and the lock file)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return mask_url_passwords(" ".join([name, *sys.argv[1:3]]))[:200]


@dataclass(frozen=True)
class Holder:
    """The process that works (or worked) a run."""

    id: str
    pid: int
    host: str
    since: datetime
    command: str = ""

    @classmethod
    def here(cls, holder_id: str, command: str | None = None, since: datetime | None = None) -> Holder:
        return cls(holder_id, os.getpid(), this_host(), since or datetime.now(UTC),
                   command_line() if command is None else command)

    @classmethod
    def of_run(cls, run: Run) -> Holder | None:
        if not run.owner:
            return None
        return cls(run.owner, run.owner_pid or 0, run.owner_host or "?", run.owner_since or run.created_at,
                   run.owner_command or "")

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Holder:
        since = doc.get("since")
        return cls(str(doc.get("id", "")), int(doc.get("pid") or 0), str(doc.get("host") or "?"),
                   datetime.fromisoformat(since) if isinstance(since, str) else datetime.now(UTC),
                   str(doc.get("command") or ""))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "pid": self.pid, "host": self.host, "since": self.since.isoformat(),
                "command": self.command}

    def describe(self) -> str:
        what = f" ({self.command})" if self.command else ""
        return f"process {self.pid} on {self.host}{what} since {self.since.isoformat(timespec='seconds')}"

    def owner_columns(self, heartbeat: datetime | None = None) -> dict[str, Any]:
        return {"owner": self.id, "owner_pid": self.pid, "owner_host": self.host, "owner_since": self.since,
                "owner_heartbeat": heartbeat or self.since, "owner_command": self.command}


@dataclass(frozen=True)
class RunStatus:
    """A run's status as a user should see it.

    status: finished | planning | running | interrupted. `recorded` is what the run row says; they differ when
    the row says planning/running but its owner is gone (killed, or ended on a store error): then the status
    is interrupted and `detail` says who held it and since when.
    """

    run_id: str
    status: str
    recorded: str
    owner: Holder | None
    alive: bool
    detail: str | None = None

    @property
    def resumable(self) -> bool:
        return self.status == "interrupted"


def effective(run: Run, alive: bool) -> RunStatus:
    """The status of `run` given whether its owner (or, when shared, any worker of it) is alive."""
    owner = Holder.of_run(run)
    if run.status not in ("planning", "running"):
        return RunStatus(run.id, run.status, run.status, owner, False)
    if alive:
        return RunStatus(run.id, run.status, run.status, owner, True)
    who = owner.describe() if owner else "its owner (not recorded)"
    return RunStatus(run.id, "interrupted", run.status, owner, False,
                     f"recorded {run.status}, but {who} is gone: resumable")
