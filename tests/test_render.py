"""Rendering for people: progress lines in any log on a fake clock, the live panel within the terminal's width,
an ETA only once there is data for it, and plan/outcome/run tables with problems first and counts last."""

from __future__ import annotations

import asyncio
import fcntl
import io
import os
import pty
import re
import shutil
import struct
import subprocess
import sys
import termios
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from reportkit import T0, load_render
from rich.console import Console

from orchestrator.clock import FakeClock
from orchestrator.planning import Action, Plan, PlanItem, Selection
from orchestrator.snapshot import Snapshot, WaitGroup

render = load_render()


def _console(width: int = 100, *, terminal: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=width, force_terminal=terminal, color_system=None, highlight=False), out


def _snap(clock: FakeClock, counts: dict[str, int], **kw: Any) -> Snapshot:
    total = kw.pop("total", sum(counts.values()))
    return Snapshot(now=clock.now(), started=T0, total=total, counts=counts, **kw)


def _progress(clock: FakeClock, **kw: Any) -> tuple[Any, io.StringIO]:
    console, out = _console()
    return render.Progress(console, live=False, interval=10, clock=clock, **kw), out


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


# -- progress without a terminal ------------------------------------------------------------------------------


def test_a_line_every_interval_even_when_nothing_changed() -> None:
    clock = FakeClock(T0)
    progress, out = _progress(clock)
    counts = {"releasing": 3, "deleted": 48}
    progress(_snap(clock, counts))
    assert len(_lines(out)) == 1
    for at in (3, 6, 9.9):  # the engine reports, nothing changed: quiet
        clock.advance(at - clock.monotonic())
        progress(_snap(clock, counts))
        progress.tick()
    assert len(_lines(out)) == 1
    clock.advance(0.1)  # t = 10: the heartbeat's line, with the time moved on
    progress.tick()
    assert len(_lines(out)) == 2 and _lines(out)[1].startswith("[   10s] 48/51 settled")
    clock.advance(5)
    progress.tick()
    assert len(_lines(out)) == 2
    clock.advance(5)  # t = 20, and still nothing changed
    progress.tick()
    assert len(_lines(out)) == 3 and _lines(out)[2].startswith("[   20s]")


def test_a_line_at_each_change_of_counts_rate_limited() -> None:
    clock = FakeClock(T0)
    progress, out = _progress(clock)
    progress(_snap(clock, {"pending": 4}))
    clock.advance(1)
    progress(_snap(clock, {"pending": 3, "stopping": 1}))  # a change, but within min_gap (2 s) of the last line
    assert len(_lines(out)) == 1
    clock.advance(1.5)
    progress(_snap(clock, {"pending": 2, "stopping": 2}))
    assert len(_lines(out)) == 2 and "pending 2, stopping 2" in _lines(out)[1]
    clock.advance(0.5)
    progress(_snap(clock, {"deleted": 4}))  # within min_gap again: held back ...
    assert len(_lines(out)) == 2
    progress.__exit__(None, None, None)  # ... but the last state always reaches the log
    assert _lines(out)[-1].startswith("[    3s] 4/4 settled · deleted 4")


def test_the_heartbeat_prints_while_the_engine_is_silent() -> None:
    clock = FakeClock(T0)
    progress, out = _progress(clock)

    async def engine_waiting_on_one_task() -> None:
        with progress:
            progress(_snap(clock, {"releasing": 1, "deleted": 2}))
            clock.advance(10)  # the engine sleeps on its clock; the renderer's heartbeat still runs
            while progress.lines < 2:
                await asyncio.sleep(0.05)

    asyncio.run(asyncio.wait_for(engine_waiting_on_one_task(), 30))
    assert [line[:9] for line in _lines(out)] == ["[    0s] ", "[   10s] "]


def test_the_line_says_what_each_group_waits_for_and_does_next() -> None:
    clock = FakeClock(T0)
    progress, out = _progress(clock)
    groups = (WaitGroup("stopping", 2, {"poll": 2}, {"INCRE_TRANSFER_STARTED": 2}),
              WaitGroup("releasing", 3, {"poll": 2, "force_terminate": 1},
                        {"RELEASE_RESOURCE_STARTED": 2, "RELEASE_RESOURCE_FAILED": 1}))
    progress(_snap(clock, {"stopping": 2, "releasing": 3, "deleted": 40, "blocked": 10}, groups=groups, calls=120,
                   retries=22, throttled=8, errors=16, targets={"bj4": {"deleted": 40, "releasing": 3},
                                                                "sg": {"stopping": 2, "blocked": 10}}))
    line = _lines(out)[0]
    assert "stopping 2, releasing 3, blocked 10, deleted 40" in line  # active first, then problems first
    assert "3 releasing (RELEASE_RESOURCE_STARTED 2, RELEASE_RESOURCE_FAILED 1), force_terminate next for 1" in line
    assert "2 stopping (INCRE_TRANSFER_STARTED 2); " in line  # polling goes without saying
    assert "poll" not in line
    assert "calls 120, retries 22, throttled 8, errors 16" in line
    assert "targets bj4 40/43, sg 10/12" in line
    assert "ETA —" in line  # nothing deleted by this process yet
    assert "\n" not in line.strip()


def test_a_parent_waiting_for_its_children_is_named_as_such() -> None:
    clock = FakeClock(T0)
    progress, out = _progress(clock)
    groups = (WaitGroup("pending", 3, {"terminate": 2, "after_children": 1}, {"INCRE_TRANSFER_STARTED": 3}),)
    progress(_snap(clock, {"pending": 3, "releasing": 1}, groups=groups))
    assert "3 pending (INCRE_TRANSFER_STARTED 3), terminate next for 2, 1 after its re-edit children" in _lines(out)[0]


def test_a_wide_line_stays_one_line_in_a_narrow_log() -> None:
    clock = FakeClock(T0)
    console, out = _console(40)
    progress = render.Progress(console, live=False, interval=10, clock=clock)
    progress(_snap(clock, {"pending": 100, "stopping": 50, "releasing": 25, "deleted": 5}, calls=9999))
    assert len(out.getvalue().splitlines()) == 1 and len(out.getvalue()) > 100


# -- the ETA --------------------------------------------------------------------------------------------------


def test_eta_only_once_there_is_data_and_never_counting_blocked_tasks() -> None:
    clock = FakeClock(T0)
    eta = render.Eta()
    total = 182

    def at(seconds: float, counts: dict[str, int], releases: tuple[float, ...] = ()) -> str:
        clock.advance(seconds - clock.monotonic())
        snap = _snap(clock, counts, total=total, release_seconds=releases, released=len(releases))
        active = sum(n for s, n in counts.items() if s not in render.TERMINAL_STATES)
        return render.Eta.text(eta(snap), active)

    # 24 blocked at plan time are not progress: no "ETA 0s" at t=0, no "ETA 2s" at 24/182.
    assert at(0, {"blocked": 24, "pending": 158}) == "ETA —"
    assert at(2, {"blocked": 24, "stopping": 158}) == "ETA —"
    assert at(20, {"blocked": 24, "releasing": 156, "deleted": 2}, (18.0, 19.0)) == "ETA —"  # 2 is too few
    # 40 deleted in 40 s, 118 still active: about two minutes.
    assert at(40, {"blocked": 24, "releasing": 118, "deleted": 40}, (18.0, 19.0, 20.0, 22.0)) == "ETA ~1m58s"
    # The last two wait out a release: not "ETA 1s" while a release takes ~20 s.
    assert at(90, {"blocked": 24, "releasing": 2, "deleted": 156}, (18.0, 20.0, 22.0)) == "ETA ~10s"
    assert at(95, {"blocked": 24, "deleted": 158}, (18.0, 20.0, 22.0)) == "done"


def test_eta_of_a_resumed_run_counts_only_what_this_process_saw_settle() -> None:
    clock = FakeClock(T0)
    eta = render.Eta()
    assert eta(_snap(clock, {"deleted": 150, "releasing": 32}, released=0)) is None
    clock.advance(30)
    value = eta(_snap(clock, {"deleted": 160, "releasing": 22}, release_seconds=(25.0,), released=10))
    assert value == pytest.approx(22 * 30 / 10)


def test_eta_follows_what_is_left_to_wait_out_from_the_observed_release_times() -> None:
    """A scripted 182-task run: 24 blocked, 10 deletable at once, 100 stopped at t=1 and 48 at t=30 (releases
    take 40-58 s). The ETA never says "0s" or "2s" early, comes down as the tail's last release nears, and says
    nothing once the last task is slower than every release seen (not "ETA 1s" for its last minute)."""
    clock = FakeClock(T0)
    eta = render.Eta()
    releases = tuple(40.0 + 2 * (i % 10) for i in range(134))  # 40, 42, ... 58 s

    def at(seconds: float, counts: dict[str, int], *, youngest: float | None, unstarted: int,
           seen: tuple[float, ...] = releases) -> str:
        clock.advance(seconds - clock.monotonic())
        snap = _snap(clock, counts, total=182, release_seconds=seen, released=len(seen), youngest_wait=youngest,
                     unstarted=unstarted)
        return render.Eta.text(eta(snap), sum(n for s, n in counts.items() if s not in render.TERMINAL_STATES))

    assert at(0, {"blocked": 24, "pending": 158}, youngest=None, unstarted=148, seen=()) == "ETA —"
    assert at(3, {"blocked": 24, "releasing": 100, "pending": 48, "deleted": 10}, youngest=2, unstarted=48,
              seen=()) == "ETA —"  # 10 quick deletes and no release seen yet: nothing to base an ETA on
    # The first wave is half released; the second (stopped at t=30) waits a typical release from now on.
    assert at(50, {"blocked": 24, "releasing": 98, "deleted": 60}, youngest=20, unstarted=0,
              seen=releases[:50]) == "ETA ~1m22s"  # the pace (98 active x 50 s / 50 done) is the larger bound
    # Tasks whose stop is still to be sent: not sooner than a whole typical (median, 48 s) release.
    assert at(50, {"blocked": 24, "pending": 3, "deleted": 155}, youngest=None, unstarted=3) == "ETA ~48s"
    # The tail: one task, stopped at t=30. The releases longer than its wait say how long it has left.
    assert at(80, {"blocked": 24, "releasing": 1, "deleted": 157}, youngest=50, unstarted=0) == "ETA ~5s"
    assert at(84, {"blocked": 24, "releasing": 1, "deleted": 157}, youngest=54, unstarted=0) == "ETA ~3s"
    # Slower than every release seen: no guess, rather than "ETA 1s" until it ends.
    assert at(90, {"blocked": 24, "releasing": 1, "deleted": 157}, youngest=60, unstarted=0) == "ETA —"
    assert at(93, {"blocked": 24, "deleted": 158}, youngest=None, unstarted=0) == "done"


# -- live, in a terminal --------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [40, 60, 120])
def test_the_live_panel_fits_the_terminal_without_wrapping(width: int) -> None:
    clock = FakeClock(T0)
    clock.advance(42)
    console, out = _console(width, terminal=True)
    progress = render.Progress(console, live=True, interval=10, clock=clock)
    snap = _snap(clock, {"pending": 100, "stopping": 50, "releasing": 25, "deleted": 5}, calls=9999,
                 groups=(WaitGroup("releasing", 25, {"force_terminate": 1, "poll": 24},
                                   {"RELEASE_RESOURCE_STARTED": 24, "RELEASE_RESOURCE_FAILED": 1}),))
    console.print(progress.panel(snap))
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # bar with ETA, states, waits, calls: nothing folded onto a second line
    assert all(len(line) <= width for line in lines), [len(line) for line in lines]
    assert lines[0].startswith("█") or lines[0].startswith("░")
    with progress:  # the Live itself renders at the console's width too
        progress(snap)
    visible = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    assert all(len(line) <= width for line in visible.splitlines())


# -- tables ---------------------------------------------------------------------------------------------------


def _text(renderable: Any, width: int = 250) -> str:
    console, out = _console(width)
    console.print(renderable)
    return out.getvalue()


def test_a_182_task_plan_shows_every_block_row_first_and_ends_with_the_counts() -> None:
    actions = [Action.BLOCK] * 10 + [Action.STOP_THEN_DELETE] * 150 + [Action.DELETE] * 12 + [Action.SKIP] * 10
    items = tuple(PlanItem(f"job-{i:03d}-{a.value}", a, f"because {i}", status="PAUSING", name=f"svc-{i:03d}")
                  for i, a in enumerate(reversed(actions)))
    plan = Plan("p" * 32, "https://drs.example", Selection(all=True), items, T0)
    text = _text(render.plan_table(plan, limit=60))
    body = [line for line in text.splitlines() if "job-" in line]
    assert len(body) == 60
    assert all("-block" in line for line in body[:10]) and not any("-block" in line for line in body[10:])
    assert "122 more (use --output json for all)" in text
    assert text.rstrip().splitlines()[-1].strip() == \
        "by action: block 10 · stop_then_delete 150 · delete 12 · skip 10 = 182"
    # More block rows than the limit: all of them still show.
    assert sum("-block" in line for line in _text(render.plan_table(plan, limit=4)).splitlines()) == 10


def test_the_outcome_table_shows_every_problem_and_ends_with_the_counts() -> None:
    jobs = ([{"job_id": f"d{i:03d}", "outcome": "deleted"} for i in range(100)]
            + [{"job_id": f"f{i}", "outcome": "failed", "reason": "refused"} for i in range(3)]
            + [{"job_id": "t0", "outcome": "timed_out"}, {"job_id": "b0", "outcome": "blocked"}])
    text = _text(render.summary_table(jobs, limit=10))
    rows = [m.group(1) for line in text.splitlines() if (m := re.match(r"\W*([dftb]\d+) ", line))]
    assert rows[:5] == ["f0", "f1", "f2", "t0", "b0"] and len(rows) == 10
    assert "95 more" in text
    assert "by outcome: failed 3 · timed_out 1 · blocked 1 · deleted 100 = 105" in text


def test_the_runs_table_puts_problem_runs_first_and_counts_them() -> None:
    def run(i: int, status: str, code: int | None) -> Any:
        return SimpleNamespace(id=f"run{i}", created_at=T0 + timedelta(minutes=i), status=status, exit_code=code,
                               project_id="p", ticket=None, consent="yes-flag")

    runs = [run(0, "finished", 0), run(1, "finished", 3), run(2, "interrupted", None), run(3, "finished", 0),
            run(4, "failed", 4)]
    text = _text(render.runs_table(runs))
    order = [m for m in re.findall(r"run\d", text)]
    assert order == ["run4", "run1", "run2", "run3", "run0"]
    assert "by status: failed (exit 4) 1 · finished (exit 3) 1 · interrupted 1 · finished (exit 0) 2 = 5" in text


# -- a real pseudo-terminal -----------------------------------------------------------------------------------

_CHILD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from datetime import timedelta
from pathlib import Path
from rich.console import Console
from reportkit import T0, load_render
from orchestrator.clock import FakeClock
from orchestrator.snapshot import Snapshot, WaitGroup
render = load_render()
console = Console(stderr=True)
print(f"terminal={console.is_terminal} width={console.width}", file=sys.stderr, flush=True)
clock = FakeClock(T0)
with render.Progress(console, live=console.is_terminal, interval=10, clock=clock) as progress:
    for i in range(6):
        clock.advance(5)
        progress(Snapshot(now=clock.now(), started=T0, total=182, counts={"releasing": 170 - i, "deleted": 12 + i},
                          groups=(WaitGroup("releasing", 170 - i, {"poll": 169 - i, "force_terminate": 1},
                                            {"RELEASE_RESOURCE_STARTED": 169 - i, "RELEASE_RESOURCE_FAILED": 1}),),
                          calls=40 + i, retries=3, throttled=1, errors=2))
        time.sleep(0.3)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_live_progress_in_a_real_pseudo_terminal_fits_its_width(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 50, 0, 0))  # 24 rows, 50 columns
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    env["TERM"] = "xterm-256color"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(Path(__file__).parent)], stdin=slave,
                             stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    screen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(master)
    assert child.wait(timeout=60) == 0, screen.decode(errors="replace")
    text = screen.decode("utf-8", errors="replace")
    assert "terminal=True width=50" in text
    visible = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    frames = [line for line in re.split(r"[\r\n]+", visible) if line.strip()]
    assert any("force_terminate next for 1" in line or line.endswith("…") for line in frames)
    assert any("settled" in line for line in frames)
    too_wide = [line for line in frames if len(line) > 50]
    assert not too_wide, too_wide


def test_each_waiting_group_has_its_own_line_in_the_live_panel() -> None:
    """In a narrow terminal a long group is cut at the edge, and the next group still shows on its own line."""
    clock = FakeClock(T0)
    console, out = _console(72, terminal=True)
    progress = render.Progress(console, live=True, interval=10, clock=clock)
    groups = (WaitGroup("pending", 1, {"after_children": 1}, {"INCRE_TRANSFER_STARTED": 1}),
              WaitGroup("releasing", 8, {"poll": 7, "force_terminate": 1},
                        {"RELEASE_RESOURCE_STARTED": 7, "RELEASE_RESOURCE_FAILED": 1}))
    console.print(progress.panel(_snap(clock, {"pending": 1, "releasing": 8, "deleted": 3}, groups=groups)))
    lines = out.getvalue().splitlines()
    assert lines[2] == "  1 pending (INCRE_TRANSFER_STARTED 1), 1 after its re-edit children"
    assert lines[3].startswith("  8 releasing (RELEASE_RESOURCE_STARTED 7, RELEASE_RESOURCE_FAILED 1)")
    assert lines[3].endswith("…") and all(len(line) <= 72 for line in lines) and len(lines) == 5


# -- the real command in a real terminal (tmux) ---------------------------------------------------------------

TMUX = shutil.which("tmux")


@pytest.mark.skipif(TMUX is None, reason="needs tmux (apt-get install -y tmux)")
def test_the_demo_in_a_tmux_pane_draws_the_live_panel_within_its_width(tmp_path: Path) -> None:
    """`drs-teardown demo` in a 72-column tmux pane: the screen, read back with capture-pane while it runs,
    shows the live panel (bar, settled count, ETA, a line per waiting group, the calls), and no line is wider
    than the pane (capture-pane -J joins wrapped lines, so a wrap would show as a longer line)."""
    name = f"drs-teardown-test-{os.getpid()}"
    exe = Path(sys.executable).with_name("drs-teardown")
    command = (f"cd {tmp_path} && env -u COLUMNS -u LINES -u NO_COLOR DRS_TEARDOWN_DB=sqlite:///{tmp_path}/demo.db "
               f"{exe} demo --jobs 12 --poll-interval 0.5; echo EXIT=$?; sleep 60")
    subprocess.run([TMUX, "new-session", "-d", "-s", name, "-x", "72", "-y", "40", command], check=True)
    screens: list[str] = []
    try:
        for _ in range(240):  # bounded: at most about two minutes
            screen = subprocess.run([TMUX, "capture-pane", "-p", "-J", "-t", name], capture_output=True,
                                    text=True, check=True).stdout
            screens.append(screen)
            if "EXIT=" in screen:
                break
            time.sleep(0.5)
    finally:
        subprocess.run([TMUX, "kill-session", "-t", name], check=False)
    assert "EXIT=0" in screens[-1], screens[-1]
    lines = [line for screen in screens for line in screen.splitlines()]
    assert not [line for line in lines if len(line) > 72]
    bars = [line for line in lines if re.match(r"^[█░]{8,} \[ *\d+s\] \d+/12 settled  ETA ", line)]
    assert bars, screens[len(screens) // 2]
    assert any(line.startswith("  calls ") and "retries" in line and "throttled" in line for line in lines)
    assert any(re.match(r"^  \d+ (releasing|pending|stopping|deletable) ", line) for line in lines)


# -- progress as JSON log records (--log-format json) ---------------------------------------------------------


def test_json_progress_keeps_the_same_rhythm_and_carries_every_figure() -> None:
    """--log-format json: a "progress" record at least every interval also when nothing changed (the heartbeat,
    on a fake clock), with the counts, the waits and their next actions, the calls/retries/throttles/errors, the
    ETA, and the plain line; the last state always ends the log."""
    import logging

    clock = FakeClock(T0)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log = logging.getLogger("drs_teardown.test_json_progress")
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(Keep())
    progress = render.LogProgress(log, interval=10, clock=clock)
    groups = (WaitGroup("releasing", 3, {"poll": 2, "force_terminate": 1},
                        {"RELEASE_RESOURCE_STARTED": 2, "RELEASE_RESOURCE_FAILED": 1}),)
    counts = {"releasing": 3, "blocked": 2, "deleted": 46}
    progress(_snap(clock, counts, groups=groups, calls=90, retries=22, throttled=8, errors=26))
    for at in (3, 6, 9.9):
        clock.advance(at - clock.monotonic())
        progress.tick()
    assert len(records) == 1
    clock.advance(0.1)
    progress.tick()  # t = 10, nothing changed: the heartbeat's record
    assert len(records) == 2
    first = records[0]
    assert first.getMessage() == "progress"
    assert (first.counts, first.total, first.done) == (counts, 51, 48)  # type: ignore[attr-defined]
    assert first.waits == ["3 releasing (RELEASE_RESOURCE_STARTED 2, RELEASE_RESOURCE_FAILED 1), "  # type: ignore[attr-defined]
                           "force_terminate next for 1"]
    assert (first.calls, first.retries, first.throttled, first.errors) == (90, 22, 8, 26)  # type: ignore[attr-defined]
    assert first.eta_s is None and first.line.startswith("[    0s] 48/51 settled")  # type: ignore[attr-defined]
    assert records[1].elapsed_s == 10.0  # type: ignore[attr-defined]
    clock.advance(1)
    progress(_snap(clock, {"blocked": 2, "deleted": 49}))  # within min_gap of the last record: held back ...
    progress.__exit__(None, None, None)  # ... and still the last record
    assert records[-1].done == 51 and records[-1].line.endswith("done")  # type: ignore[attr-defined]


def test_while_the_plan_is_still_read_there_is_no_eta_and_never_done() -> None:
    """A pipelined run's first snapshots come before the plan has found its tasks: "planning", no ETA (more tasks
    may come), not "0/0 settled … done"."""
    clock = FakeClock(T0)
    progress, out = _progress(clock)
    progress(_snap(clock, {}, planning=True))
    assert _lines(out)[0] == ("[    0s] planning · 0/0 settled · no tasks · calls 0, retries 0, throttled 0, "
                              "errors 0 · ETA —")
    assert render.Eta()(_snap(clock, {"deleted": 5}, planning=True)) is None
