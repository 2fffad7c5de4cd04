"""Test kit for the audit and report tests: real runs on the simulator, raw-SQL tampering, synthetic runs."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import itertools
import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import update

import orchestrator
from orchestrator.api import RunSummary, connect, execute, make_client, plan, tuning_from
from orchestrator.clock import RealClock
from orchestrator.config import Settings
from orchestrator.lifecycle import TERMINAL, TaskState
from orchestrator.planning import Selection
from orchestrator.simulator import Simulator
from orchestrator.simulator.profiles import Profile, load_profile
from orchestrator.store.repo import Context, Event, Store
from orchestrator.store.schema import ApiCall, Run, Task
from orchestrator.usecases import actor_info, new_worker_id, start_run

TOKEN = "tok"
TRIGGERS = ("audit_records_no_update", "audit_records_no_delete", "api_calls_no_update",
            "api_calls_no_delete")


@dataclass(frozen=True)
class RealRun:
    """A finished run in a SQLite file."""

    path: Path
    run_id: str
    summary: RunSummary

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"


def rough_fast() -> Profile:
    """Every fault of the "rough" profile, with test-speed durations: per-item failures, 5xx, throttling."""
    return load_profile("rough").with_overrides(create_seconds=(0.05, 0.2), start_seconds=(0.05, 0.2),
                                                release_seconds=(0.05, 0.3))


async def _run(db_url: str, jobs: int, seed: int, profile: Profile | str) -> tuple[str, RunSummary]:
    sim = Simulator(seed=seed, jobs=jobs, profile=profile, tokens={TOKEN})
    with sim.serve() as url:
        settings = Settings(endpoint=url, project_id=sim.project_id, poll_interval=0.2, db=db_url)
        conn = connect(settings, {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN})
        clock = RealClock()
        client = make_client(conn, settings, clock)
        store = Store(settings.db)
        try:
            p = await plan(client, Selection(all=True), url, clock)
            ctx = Context(actor=actor_info(conn.identity), worker=new_worker_id(), ticket="CHG-1",
                          reason="decommission")
            tuning = tuning_from(settings)
            run_id = start_run(store, p, ctx, tuning, clock.now(), consent="yes-flag")
            summary = await execute(store, client, ctx, tuning, clock, run_id, fresh=True)
        finally:
            await client.aclose()
            store.close()
    return run_id, summary


def make_run(path: Path, *, jobs: int = 40, seed: int = 3, profile: Profile | str = "fast") -> RealRun:
    """A real teardown of a simulated world into a fresh SQLite file (about a second)."""
    run_id, summary = run_into(f"sqlite:///{path}", jobs=jobs, seed=seed, profile=profile)
    checkpoint(path)
    return RealRun(path, run_id, summary)


def run_into(db_url: str, *, jobs: int = 40, seed: int = 3,
             profile: Profile | str = "fast") -> tuple[str, RunSummary]:
    """A real teardown of a simulated world into any database; the run id and its summary."""
    return asyncio.run(_run(db_url, jobs, seed, profile))


def checkpoint(path: Path) -> None:
    """Fold the WAL into the main file, so copying the one file copies the whole database."""
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def copy_run(run: RealRun, dest: Path) -> RealRun:
    """An independent copy of a run's database (for a test that tampers with it)."""
    shutil.copyfile(run.path, dest)
    return RealRun(dest, run.run_id, run.summary)


class Attacker:
    """Someone with write access to the database file, working with raw SQL."""

    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(path, isolation_level=None)

    def __enter__(self) -> Attacker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.con.close()

    def drop_triggers(self) -> None:
        for name in TRIGGERS:
            self.con.execute(f"DROP TRIGGER {name}")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.con.execute(sql, params).rowcount

    def record(self, run_id: str, seq: int) -> dict[str, Any]:
        cur = self.con.execute("SELECT * FROM audit_records WHERE run_id = ? AND seq = ?", (run_id, seq))
        names = [d[0] for d in cur.description]
        row = cur.fetchone()
        assert row is not None, f"no record seq {seq}"
        return dict(zip(names, row, strict=True))

    def count(self, run_id: str) -> int:
        cur = self.con.execute("SELECT count(*) FROM audit_records WHERE run_id = ?", (run_id,))
        return int(cur.fetchone()[0])


# -- synthetic runs: many tasks without a simulator ----------------------------------------------------------

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
ACTOR = {"os_user": "alice", "host": "ops-bastion-1", "tool": "drs-teardown 0.1.0",
         "credential": "aksk:HPUA…0000"}

# Each scenario: the planned action, the plan status, then (trigger, to_state, remote status, seconds later).
_REASONS = {"failed": "DRS.M01504 repeated: another operation in progress",
            "timed_out": "stop did not complete within 1800 s",
            "blocked": "yearly/monthly order: unsubscribe the order first", "skipped": "already DELETED"}
_PATHS: dict[str, tuple[str, str, list[tuple[str, TaskState, str, float]]]] = {
    "deleted": ("stop_then_delete", "INCRE_TRANSFER_STARTED", [
        ("stop", TaskState.STOPPING, "INCRE_TRANSFER_STARTED", 2),
        ("stop_accepted", TaskState.RELEASING, "RELEASE_RESOURCE_STARTED", 1),
        ("released", TaskState.DELETABLE, "RELEASE_RESOURCE_COMPLETE", 40),
        ("delete", TaskState.DELETING, "RELEASE_RESOURCE_COMPLETE", 1),
        ("deleted", TaskState.DELETED, "DELETED", 3)]),
    "failed": ("stop_then_delete", "FULL_TRANSFER_FAILED", [
        ("stop", TaskState.STOPPING, "FULL_TRANSFER_FAILED", 2),
        ("fail", TaskState.FAILED, "FULL_TRANSFER_FAILED", 1)]),
    "timed_out": ("stop_then_delete", "INCRE_TRANSFER_STARTED", [
        ("stop", TaskState.STOPPING, "INCRE_TRANSFER_STARTED", 2),
        ("stop_accepted", TaskState.RELEASING, "RELEASE_RESOURCE_STARTED", 1),
        ("time_out", TaskState.TIMED_OUT, "RELEASE_RESOURCE_STARTED", 90)]),
    "skipped": ("skip", "DELETED", [("skip", TaskState.SKIPPED, "DELETED", 0)]),
    "blocked": ("block", "PAUSING", [("block", TaskState.BLOCKED, "PAUSING", 0)]),
    "pending": ("stop_then_delete", "INCRE_TRANSFER_STARTED", [
        ("stop", TaskState.STOPPING, "INCRE_TRANSFER_STARTED", 2)]),
}
MIX = ("deleted",) * 7 + ("failed", "timed_out", "skipped", "blocked", "pending")


def synthetic_run(store: Store, n: int, *, ticket: str | None = "CHG-2042",
                  reason: str | None = "decommission <legacy> & \"old\" DCs",
                  name_of: Callable[[int], str] | None = None, worker: str = "ops-bastion-1:4242:abcdef",
                  run_id: str | None = None) -> str:
    """A run with n tasks walked through a mix of outcomes over a few minutes, written through the Store."""
    run_id = run_id or f"synthetic{n:05d}{'x' * 18}"[:32]
    ctx = Context(actor=ACTOR, worker=worker, ticket=ticket, reason=reason)
    kinds = [MIX[i % len(MIX)] for i in range(n)]
    ids = [f"{i:08x}-0000-4000-8000-{i:012x}" for i in range(n)]
    names = [name_of(i) if name_of else f"svc-{i:04d}-sync" for i in range(n)]
    run = Run(id=run_id, created_at=T0, finished_at=None, status="running", project_id="0" * 32,
              endpoint="https://drs.example.invalid", selection={"all": True}, options={}, actor=ACTOR,
              ticket=ticket, reason=reason, consent="yes-flag", plan_hash=None, exit_code=None,
              head_hash="")
    tasks, events = [], [Event(trigger="run_started", detail=f"consent=yes-flag; targets={n}")]
    for job_id, name, kind in zip(ids, names, kinds, strict=True):
        action, status, _ = _PATHS[kind]
        tasks.append(dict(run_id=run_id, job_id=job_id, name=name, planned_action=action, plan_status=status,
                          state=TaskState.PENDING, last_status=status, stop_attempts=0, forced=False,
                          busy_retries=0, resends=0, unchanged_polls=0, updated_at=T0))
        events.append(Event(trigger="plan", job_id=job_id, to_state="pending", remote_status=status,
                            detail=f"{action}: planned"))
    store.create_run(run, tasks, ctx, events, T0)
    # Walk every task one step at a time, staggered, so the timeline has overlapping segments.
    timeline: list[tuple[datetime, Event]] = []
    final: dict[tuple[TaskState, str, str | None], list[str]] = {}
    for i, (job_id, kind) in enumerate(zip(ids, kinds, strict=True)):
        at, state = T0 + timedelta(seconds=1 + (i % 37) * 1.5), TaskState.PENDING
        reason_text = _REASONS.get(kind)
        for trigger, dest, remote, later in _PATHS[kind][2]:
            at += timedelta(seconds=later)
            outcome = dest.value if dest in TERMINAL else None
            timeline.append((at, Event(trigger=trigger, job_id=job_id, from_state=state.value,
                                       to_state=dest.value, remote_status=remote, outcome=outcome,
                                       error_code="DRS.M01504" if outcome == "failed" else None,
                                       request_ids=(f"req-{job_id[:8]}",),
                                       detail=reason_text if outcome else None)))
            state = dest
        final.setdefault((state, remote, reason_text), []).append(job_id)
    timeline.sort(key=lambda x: x[0])
    # One transaction per instant, as the engine commits a batch at a time.
    for at, group in itertools.groupby(timeline, key=lambda x: x[0]):
        store.append_events(run_id, ctx, [ev for _, ev in group], at)
    # Task rows in bulk (Store.apply updates one row per statement: too slow for thousands here).
    with store.session() as s:
        for (state, remote, reason_text), job_ids in final.items():
            s.execute(update(Task).where(Task.run_id == run_id, Task.job_id.in_(job_ids))
                      .values(state=state, last_status=remote, reason=reason_text))
        s.add(ApiCall(run_id=run_id, at=T0, worker=ctx.worker, api="batch-jobs", method="DELETE",
                      path="/v3/0/jobs/batch-jobs", http_status=202, request_id="r1", duration_ms=12.5,
                      job_ids=",".join(ids[:3]), error_code=None, attempt=1))
        s.add(ApiCall(run_id=run_id, at=T0, worker=ctx.worker, api="batch-status", method="POST",
                      path="/v3/0/jobs/batch-status", http_status=429, request_id=None, duration_ms=3.0,
                      job_ids=",".join(ids[:3]), error_code="APIGW.0308", attempt=1))
    end = (timeline[-1][0] if timeline else T0) + timedelta(seconds=2)
    if "pending" in kinds:
        store.append_events(run_id, ctx, [Event(trigger="run_interrupted", detail="resumable")], end)
        store.set_run(run_id, status="interrupted")
    else:
        store.append_events(run_id, ctx, [Event(trigger="run_finished", outcome="3")], end)
        store.set_run(run_id, status="finished", finished_at=end, exit_code=3)
    return run_id


# -- headless Chromium and PNG, with the standard library only ------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
NO_CHROMIUM = "needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)"


def screenshot(html_file: Path, png: Path, profile: Path, *, size: str = "1400,2000") -> None:
    """Render a file in headless Chromium, offline, and save a screenshot."""
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={profile}", f"--screenshot={png}", f"--window-size={size}", html_file.as_uri()],
        check=True, capture_output=True, timeout=120,
    )


def near(pixel: bytes, colour: tuple[int, int, int], tolerance: int = 6) -> bool:
    return all(abs(p - c) <= tolerance for p, c in zip(pixel[:3], colour, strict=True))


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return int(hex_colour[1:3], 16), int(hex_colour[3:5], 16), int(hex_colour[5:7], 16)




@dataclass(frozen=True)
class Png:
    """A decoded 8-bit, non-interlaced RGB or RGBA PNG (what Chromium writes)."""

    width: int
    height: int
    channels: int
    rows: list[bytes]

    def colours(self, step: int = 7) -> set[bytes]:
        """The distinct pixel values on a sparse grid."""
        c = self.channels
        return {row[x * c:(x + 1) * c] for row in self.rows[::step] for x in range(0, self.width, step)}

    def crop(self, top: int, height: int) -> bytes:
        """A horizontal band as a new PNG file (for looking at a long page one screen at a time)."""
        band = self.rows[top:top + height]
        colour_type = 6 if self.channels == 4 else 2
        raw = b"".join(b"\x00" + row for row in band)
        return (b"\x89PNG\r\n\x1a\n"
                + _chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, len(band), 8, colour_type, 0, 0, 0))
                + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def read_png(data: bytes) -> Png:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, [], b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    width, height, depth, colour_type, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour_type in (2, 6) and interlace == 0, (depth, colour_type, interlace)
    c = 4 if colour_type == 6 else 3
    raw = zlib.decompress(b"".join(idat))
    stride, rows, prev = width * c, [], bytearray(width * c)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - c] if i >= c else 0
            b = prev[i]
            if f == 1:
                line[i] = (line[i] + a) & 0xFF
            elif f == 2:
                line[i] = (line[i] + b) & 0xFF
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif f == 4:
                up_left = prev[i - c] if i >= c else 0
                p = a + b - up_left
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - up_left)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else up_left
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return Png(width, height, c, rows)


def load_render() -> ModuleType:
    """orchestrator.cli.render; until orchestrator/cli/ is the CLI package (cli.py shadows it), from its file."""
    try:
        return importlib.import_module("orchestrator.cli.render")
    except ModuleNotFoundError:
        path = Path(orchestrator.__file__).parent / "cli" / "render.py"
        spec = importlib.util.spec_from_file_location("orchestrator_cli_render", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
