"""The issue-17 reports in headless Chromium: an escalated run, an interrupted-and-resumed run, 10,000 tasks.

Set DRS_TEARDOWN_SCREENSHOTS=DIR to keep the screenshots (to look at them)."""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from reportkit import CHROMIUM, NO_CHROMIUM, Png, near, read_png, rgb, screenshot, synthetic_run

from orchestrator.report import OUTCOME_COLORS, STATE_COLORS, render_html
from orchestrator.store.repo import Store
from report.trails import escalated_run, interrupted_run

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not CHROMIUM.exists(), reason=NO_CHROMIUM)]


def _shoot(tmp_path: Path, name: str, build: Callable[[Store], str], size: str) -> Png:
    store = Store(f"sqlite:///{tmp_path / f'{name}.db'}")
    try:
        report = render_html(store, build(store))
    finally:
        store.close()
    html_file, png = tmp_path / f"{name}.html", tmp_path / f"{name}.png"
    html_file.write_text(report.html, encoding="utf-8")
    screenshot(html_file, png, tmp_path / "profile", size=size)
    keep = os.environ.get("DRS_TEARDOWN_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, Path(keep) / png.name)
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
    image = read_png(png.read_bytes())
    assert len(image.colours(step=5)) > 100, "not a real page: too few colours"
    return image


def _on_screen(image: Png, colour: str) -> bool:
    return any(near(px, rgb(colour)) for px in image.colours(step=3))


def test_escalated_run(tmp_path: Path) -> None:
    image = _shoot(tmp_path, "escalated", escalated_run, "1400,3000")
    for colour in (STATE_COLORS["releasing"], OUTCOME_COLORS["failed"], OUTCOME_COLORS["deleted"],
                   "#fff7ed",  # the escalation's highlighted line in the task table
                   "#dcfce7"):  # the "recovered" tags
        assert _on_screen(image, colour), colour


def test_interrupted_and_resumed_run(tmp_path: Path) -> None:
    image = _shoot(tmp_path, "resumed", interrupted_run, "1400,1400")
    blue, hatch = rgb(STATE_COLORS["releasing"]), rgb("#94a3b8")
    c = image.channels
    split = 0
    for row in image.rows:
        xs = [x for x in range(image.width) if near(row[x * c:(x + 1) * c], blue)]
        if len(xs) < 40:
            continue
        # A lane that releases across the interruption: two blue bars with the hatched gap between them.
        a, b = max(itertools.pairwise(xs), key=lambda p: p[1] - p[0])
        if b - a > 30 and any(near(row[x * c:(x + 1) * c], hatch, 12) for x in range(a, b)):
            split += 1
    assert split >= 4 * 5, "no lane broken by the hatched gap"


def test_ten_thousand_tasks(tmp_path: Path) -> None:
    image = _shoot(tmp_path, "ten-thousand", lambda s: synthetic_run(s, 10_000), "1400,1600")
    for colour in (STATE_COLORS["releasing"], STATE_COLORS["stopping"], OUTCOME_COLORS["deleted"],
                   OUTCOME_COLORS["failed"], OUTCOME_COLORS["timed_out"], OUTCOME_COLORS["blocked"]):
        assert _on_screen(image, colour), colour
