"""Benchmark plumbing: the simulator and the orchestrator each in a process of its own, so the two never share an
interpreter (nor its GIL), the way an operator's run meets the real service.

`SimProcess` starts `drs-teardown simulator serve` and reads the URL and project from its first stdout line;
`run_cli` runs one drs-teardown command to its end and returns the process's wall time and peak RSS (wait4);
`trail_figures` reads the calls and the run's times from the database the command wrote.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

TOKEN = "tok-" + "b" * 20
AK, SK = "BENCHAK0000000000000", "bench-sk-" + "s" * 31
PROJECT = "0123456789abcdef0123456789abcdef"
RUNNING = "INCRE_TRANSFER_STARTED"
# The run's tuning in every benchmark: a short poll (releases take 2-3 s) and the gateway's rate less a margin.
RUN_ARGS = ["--poll-interval", "0.5", "--rate", "190"]


def limit_for(tasks: int) -> float:
    """The wall no client can beat (bench profile): the batch-detail calls the plan needs (10 ids a call at
    200 calls/s), plus the slowest release (3.0 s), plus three round trips of 20 ms."""
    return (tasks / 10) / 200 + 3.0 + 0.06


def project_for(k: int) -> str:
    return f"{k:02x}" * 16 if k else PROJECT


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRS_TEARDOWN_", "HUAWEICLOUD_"))}
    env.update(extra)
    return env


@dataclass
class SimProcess:
    """`drs-teardown simulator serve --profile bench` in its own process, seeded with `jobs` running tasks."""

    jobs: int
    workdir: Path
    project_id: str = PROJECT
    region: str = "cn-north-4"
    seed: int = 11
    peers: Sequence[tuple[str, str]] = ()
    url: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 120.0) -> SimProcess:
        args = [sys.executable, "-m", "orchestrator", "simulator", "serve", "--profile", "bench",
                "--jobs", str(self.jobs), "--job-status", RUNNING, "--seed", str(self.seed),
                "--project-id", self.project_id, "--region", self.region, "--token", TOKEN]
        for name, pid in self.peers:
            args += ["--project", f"{name}={pid}"]
        err = (self.workdir / f"sim-{self.region}.err").open("wb")
        env = clean_env(HUAWEICLOUD_SDK_AK=AK, HUAWEICLOUD_SDK_SK=SK)
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=env)
        err.close()
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = self.proc.stdout.readline().decode()  # "listening on URL project PROJECT_ID region REGION"
        if not line.startswith("listening on ") or time.monotonic() > deadline:
            self.stop()
            raise RuntimeError(f"simulator did not start: {line!r}")
        words = line.split()
        self.url, self.project_id = words[2], words[4]
        return self

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.url + path, timeout=60) as answer:
            return json.loads(answer.read())

    def top_level_ids(self) -> list[str]:
        jobs = self.get("/_sim/jobs")["jobs"]
        return sorted(j for j, d in jobs.items() if not (d.get("parent_id") or d.get("parentId")))

    def violations(self) -> dict[str, int]:
        return dict(self.get("/_sim/violations")["violations"])

    def jobs_file(self, path: Path) -> Path:
        path.write_text("\n".join(self.top_level_ids()) + "\n")
        return path

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def simulators(count: int, jobs: int, workdir: Path) -> Iterator[list[SimProcess]]:
    """`count` simulators, one per region, each its own project; they know each other's projects."""
    regions = [(f"bench-region-{k}", project_for(k)) for k in range(count)]
    with ExitStack() as stack:
        sims = []
        for k, (region, project) in enumerate(regions):
            sim = SimProcess(jobs, workdir, project_id=project, region=region, seed=11 + k,
                             peers=[r for r in regions if r[0] != region])
            stack.callback(sim.stop)
            sims.append(sim.start())
        yield sims


@dataclass
class Finished:
    name: str
    code: int
    wall: float  # process wall: from spawn to reaped
    ended_at: float  # seconds after the `started` the caller gave
    rss_mb: float
    out: str
    err: str
    spawned_epoch: float = 0.0  # time.time() at spawn and at exit, to set beside the trail's timestamps
    exited_epoch: float = 0.0

    def doc(self) -> dict[str, Any]:
        return json.loads(self.out)  # type: ignore[no-any-return]


class Spawned:
    """A drs-teardown process writing to files (a pipe could fill up and stall it), reaped with wait4.

    With BENCH_CPROFILE=DIR the process runs under cProfile and leaves DIR/NAME.prof (`python -m pstats`); the
    figures it prints then include the profiler's overhead.
    """

    def __init__(self, name: str, args: Sequence[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.out_path, self.err_path = workdir / f"{name}.out", workdir / f"{name}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            profile = os.environ.get("BENCH_CPROFILE")
            prefix = ["-m", "cProfile", "-o", str(Path(profile) / f"{name}.prof")] if profile else []
            self.started, self.started_epoch = time.perf_counter(), time.time()
            self.proc = subprocess.Popen([sys.executable, *prefix, "-m", "orchestrator", *args], env=env,
                                         stdout=out, stderr=err)

    def reap(self, since: float | None = None) -> Finished:
        _, status, usage = os.wait4(self.proc.pid, 0)
        now = time.perf_counter()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        return Finished(self.name, self.proc.returncode, now - self.started, now - (since or self.started),
                        usage.ru_maxrss / 1024, self.out_path.read_text(), self.err_path.read_text(),
                        self.started_epoch, time.time())


def run_cli(name: str, args: Sequence[str], env: dict[str, str], workdir: Path) -> Finished:
    return Spawned(name, args, env, workdir).reap()


def _ts(value: object) -> float:
    return value.timestamp() if isinstance(value, datetime) else datetime.fromisoformat(str(value)).timestamp()


def run_recorded(db_url: str) -> bool:
    """A run is in the database (the moment to start workers that join it)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ProgrammingError

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return bool(conn.execute(text("select count(*) from runs")).scalar())
    except ProgrammingError:
        return False  # not migrated yet
    finally:
        engine.dispose()


def trail_figures(db_url: str, run_id: str | None = None) -> dict[str, Any]:
    """Calls, calls by API, and the seconds from the run's first API call to the run finished (all runs in the
    database when run_id is None: the first call of any to the last finish)."""
    engine = create_engine(db_url)
    where, params = ("where run_id = :r", {"r": run_id}) if run_id else ("", {})
    try:
        with engine.connect() as conn:
            calls = conn.execute(text(f"select count(*) from api_calls {where}"), params).scalar_one()
            by_api = dict(conn.execute(text(f"select api, count(*) from api_calls {where} group by api"),
                                       params).all())
            t0 = conn.execute(text(f"select min(at) from api_calls {where}"), params).scalar_one()
            run_where = "where id = :r" if run_id else ""
            t_end = conn.execute(text(f"select max(finished_at) from runs {run_where}"), params).scalar_one()
            t_run = conn.execute(text(f"select min(created_at) from runs {run_where}"), params).scalar_one()
    finally:
        engine.dispose()
    return {"calls": calls, "by_api": by_api, "first_call_to_finished": _ts(t_end) - _ts(t0),
            "first_call_at": _ts(t0), "recorded_at": _ts(t_run), "finished_at": _ts(t_end)}


def phases(done: Finished, trail: dict[str, Any]) -> dict[str, float]:
    """Where the process wall goes: spawn -> first API call (start-up: imports, migrations, the run recorded),
    first call -> run finished (plan and run), finished -> exit (the summary document, shutdown)."""
    return {"to_first_call": trail["first_call_at"] - done.spawned_epoch,
            "first_call_to_finished": trail["finished_at"] - trail["first_call_at"],
            "after_finished": done.exited_epoch - trail["finished_at"]}


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def repeats(default: int = 1) -> int:
    """How many times each configuration runs (BENCH_REPEAT); the medians are printed."""
    return max(1, int(os.environ.get("BENCH_REPEAT", str(default))))
