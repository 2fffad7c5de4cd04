"""Who acts: the actor and worker identity stamped on every audit record, built in this one place."""

from __future__ import annotations

import getpass
import os
import socket
import uuid
from typing import Any

from orchestrator.store.repo import Context
from orchestrator.version import __version__


def actor_info(credential: str | None) -> dict[str, Any]:
    """Who acts: OS user, host, tool version, credential identity (never the secret)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return {"os_user": user, "host": socket.gethostname(), "tool": f"drs-teardown {__version__}",
            "credential": credential or "none"}


def new_worker_id() -> str:
    """host:pid:random — one per process and run it works (the owner named when another is refused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def new_context(identity: str | None, *, ticket: str | None, reason: str | None,
                worker: str | None = None) -> Context:
    """The actor Context for a run, a resume or a worker."""
    return Context(actor=actor_info(identity), worker=worker or new_worker_id(), ticket=ticket, reason=reason)
