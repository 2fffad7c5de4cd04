"""Helpers for the store's tests: a run row, a context, and a child process that takes runs on command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from orchestrator.lifecycle import TaskState
from orchestrator.store.repo import Context, Event, Store
from orchestrator.store.schema import Run

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
CTX = Context(actor={"os_user": "test", "host": "here"}, worker="tester:1:abcdef", ticket="CHG-1")
CHILD = Path(__file__).with_name("owner_child.py")
REPO = Path(__file__).resolve().parents[2]


def job_id(n: int) -> str:
    return f"{n:08x}-0000-4000-8000-{uuid.uuid4().hex[:12]}"


def new_run(run_id: str | None = None, status: str = "planning", project_id: str = "p" * 32) -> Run:
    return Run(id=run_id or uuid.uuid4().hex, created_at=NOW, finished_at=None, status=status,
               project_id=project_id, endpoint="http://127.0.0.1:1", selection={"jobs": ["x"]},
               options={"batch_size": 100}, actor=CTX.actor, ticket=CTX.ticket, reason=None, consent="test",
               plan_hash=None, exit_code=None, head_hash="")


def task(job: str, **kw: Any) -> dict[str, Any]:
    return {"job_id": job, "planned_action": "stop_then_delete", "state": TaskState.PENDING, **kw}


def record_run(store: Store, status: str = "planning", jobs: int = 0, project_id: str = "p" * 32) -> str:
    run = new_run(status=status, project_id=project_id)
    ids = [job_id(i) for i in range(jobs)]
    store.create_run(run, [task(j) for j in ids], CTX, [Event(trigger="run_started", detail="consent=test")], NOW)
    return run.id


class Child:
    """A real process holding a Store on `url`; it takes and drops runs when told (see owner_child.py)."""

    def __init__(self, url: str, name: str = "child") -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen([sys.executable, str(CHILD), url, name], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert self.read() == {"ready": True}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"child died: {self.proc.stderr.read() if self.proc.stderr else ''}")
        return json.loads(line)

    def ask(self, line: str) -> dict[str, Any]:
        self.send(line)
        return self.read()

    def kill(self, sig: int) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.send("exit")
            self.proc.wait(timeout=30)
