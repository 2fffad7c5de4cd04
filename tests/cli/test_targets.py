"""One run over several projects and regions (`--targets FILE`): the file format, credentials, one trail."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from orchestrator.errors import SelectionError
from orchestrator.selection import parse_targets_file
from orchestrator.simulator import JobSpec, Simulator
from tests.kit import TOKEN, cli

AK, SK = "AKTESTTARGETS0001", "sk-" + "s" * 30
P1, P2 = "1" * 32, "2" * 32
FAST = ["--poll-interval", "0.05"]


@contextmanager
def two_regions() -> Iterator[list[tuple[Simulator, str]]]:
    with ExitStack() as stack:
        out = []
        for seed, project in enumerate((P1, P2)):
            sim = Simulator(project_id=project, seed=seed, profile="fast", aksk={AK: SK}, tokens={TOKEN})
            out.append((sim, stack.enter_context(sim.serve())))
        yield out


def write_targets(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(body)
    return path


def north_and_south(tmp_path: Path, north_url: str, south_url: str) -> Path:
    """The two regions as targets, each selecting all of its tasks."""
    return write_targets(tmp_path, "".join(
        f'[[target]]\nlabel = "{label}"\nendpoint = "{url}"\nproject_id = "{project}"\nall = true\n\n'
        for label, url, project in (("north", north_url, P1), ("south", south_url, P2))))


def test_the_file_format_is_the_contract(tmp_path: Path) -> None:
    (tmp_path / "sg.txt").write_text("0a1b2c3d-0000-4000-8000-00000000abcd\n")
    path = write_targets(tmp_path, f'''
[[target]]
label = "bj4-legacy"
region = "cn-north-4"
project_id = "{P1}"
name = "legacy-*"
tags = {{env = "dev"}}

[[target]]
endpoint = "https://drs.ap-southeast-1.myhuaweicloud.com"
project_id = "{P2}"
jobs_file = "sg.txt"
''')
    one, two = parse_targets_file(str(path))
    assert (one.label, one.region, one.selection.name_glob, one.selection.tags) == (
        "bj4-legacy", "cn-north-4", "legacy-*", (("env", "dev"),))
    assert two.endpoint and two.selection.job_ids == ("0a1b2c3d-0000-4000-8000-00000000abcd",)
    assert two.label  # a default label names the place and project


@pytest.mark.parametrize("body, needle", [
    (f'[[target]]\nregion = "cn-north-4"\nproject_id = "{P1}"\nall = true\nregoin = "x"\n', "'regoin'"),
    (f'[[target]]\nlabel = "a"\nregion = "cn-north-4"\nproject_id = "{P1}"\n', "target 1 (a)"),
    (f'[[target]]\nproject_id = "{P1}"\nall = true\n', "region or endpoint"),
    ('[[target]]\nregion = "cn-north-4"\nall = true\n', "project_id"),
    (f'[[target]]\nregion = "r"\nproject_id = "{P1}"\njobs_file = "missing.txt"\n', "missing.txt"),
    (f'[[target]]\nregion = "r"\nproject_id = "{P1}"\njobs = ["nope"]\n', "'nope'"),
    (f'[run]\nall = true\n[[target]]\nregion = "r"\nproject_id = "{P1}"\nall = true\n', "'run'"),
])
def test_a_bad_targets_file_names_the_key_and_the_target(tmp_path: Path, body: str, needle: str) -> None:
    with pytest.raises(SelectionError, match=None) as info:
        parse_targets_file(str(write_targets(tmp_path, body)))
    assert needle in str(info.value) and "targets.toml" in str(info.value)


def test_one_run_over_two_regions_with_aksk(tmp_path: Path, sqlite_db: str) -> None:
    with two_regions() as regions:
        ids = [sim.add_jobs(2, JobSpec(status="INCRE_TRANSFER_STARTED")) for sim, _ in regions]
        (tmp_path / "two.txt").write_text("\n".join(ids[1]) + "\n")
        path = write_targets(tmp_path, f'''
[[target]]
label = "north"
endpoint = "{regions[0][1]}"
project_id = "{P1}"
all = true

[[target]]
label = "south"
endpoint = "{regions[1][1]}"
project_id = "{P2}"
jobs_file = "two.txt"
''')
        env = {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK, "DRS_TEARDOWN_DB": sqlite_db}
        plan = cli(["plan", "--targets", str(path), "--output", "json"], env)
        assert plan.exit_code == 0, plan.output
        p = json.loads(plan.stdout)
        assert [t["label"] for t in p["targets"]] == ["north", "south"]
        assert {i["target"] for i in p["items"]} == {"north", "south"}
        capped = cli(["run", "--targets", str(path), "--yes", "--max-targets", "3"], env)
        assert capped.exit_code == 2 and "--max-targets 3" in capped.stderr
        assert all(sim.destructive_calls == [] for sim, _ in regions)
        run = cli(["run", "--targets", str(path), "--yes", "--output", "json", *FAST], env)
        assert run.exit_code == 0, run.output
        d = json.loads(run.stdout)
        assert {(t["label"], t["project_id"]): t["counts"] for t in d["targets"]} == {
            ("north", P1): {"deleted": 2}, ("south", P2): {"deleted": 2}}
        assert {j["job_id"]: j["target"] for j in d["jobs"]} == {
            **dict.fromkeys(ids[0], "north"), **dict.fromkeys(ids[1], "south")}
        for (sim, _), mine in zip(regions, ids, strict=True):
            assert all(sim.status_of(i) in ("DELETED", None) for i in mine)
            assert dict(sim.violations) == {}
    v = cli(["verify", d["run_id"], "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert v.exit_code == 0 and json.loads(v.stdout)["ok"] is True


def test_a_single_token_with_several_projects_is_refused_before_any_call(tmp_path: Path, sqlite_db: str) -> None:
    with two_regions() as regions:
        path = write_targets(tmp_path, "".join(
            f'[[target]]\nendpoint = "{url}"\nproject_id = "{p}"\nall = true\n'
            for (_, url), p in zip(regions, (P1, P2), strict=True)))
        r = cli(["run", "--targets", str(path), "--yes", "--output", "json"],
                {"DRS_TEARDOWN_AUTH_TOKEN": TOKEN, "DRS_TEARDOWN_DB": sqlite_db})
        assert all(sim.requests == [] for sim, _ in regions)
    assert r.exit_code == 1 and "DRS_TEARDOWN_AUTH_TOKEN" in json.loads(r.stdout)["error"]
    assert TOKEN not in r.output


def test_targets_with_ids_or_filters_is_a_usage_error(tmp_path: Path, sqlite_db: str) -> None:
    path = write_targets(tmp_path, f'[[target]]\nregion = "cn-north-4"\nproject_id = "{P1}"\nall = true\n')
    r = cli(["plan", "--targets", str(path), "--all"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert r.exit_code == 1 and "--targets" in r.stderr


def test_one_target_failing_does_not_stop_the_others(tmp_path: Path, sqlite_db: str) -> None:
    """South answers its plan, then only 503 to every poll and every batch-jobs call: north still finishes,
    south's tasks end with the reason, the exit code says so, and nothing of south is deleted."""
    with two_regions() as regions:
        (north, north_url), (south, south_url) = regions
        ids = [sim.add_jobs(2, JobSpec(status="INCRE_TRANSFER_STARTED")) for sim, _ in regions]
        path = north_and_south(tmp_path, north_url, south_url)
        env = {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK, "DRS_TEARDOWN_DB": sqlite_db}
        for route in ("batch-status", "batch-jobs"):
            south.set_fault(route, "error_5xx", times=None, status=503)
        run = cli(["run", "--targets", str(path), "--yes", "--output", "json", *FAST, "--timeout", "15"], env)
        d = json.loads(run.stdout)
        outcomes = {j["job_id"]: j["outcome"] for j in d["jobs"]}
        assert {j: outcomes[j] for j in ids[0]} == dict.fromkeys(ids[0], "deleted")
        assert all(outcomes[j] != "deleted" for j in ids[1])
        assert run.exit_code == d["exit_code"] == 3, run.output
        assert all(south.status_of(j) not in ("DELETED", None) for j in ids[1])
        assert dict(north.violations) == {} and dict(south.violations) == {}


def test_a_target_failing_while_planning_does_not_stop_the_others_and_resume_plans_it(
        tmp_path: Path, sqlite_db: str) -> None:
    """South refuses its list call (403) while planning: north is planned and torn down, south ends unplanned
    with the reason (exit 3, `target_failed` in the trail, the run resumable); once south answers, `resume`
    plans it and finishes the run (exit 0)."""
    with two_regions() as regions:
        (north, north_url), (south, south_url) = regions
        ids = [sim.add_jobs(2, JobSpec(status="INCRE_TRANSFER_STARTED")) for sim, _ in regions]
        path = north_and_south(tmp_path, north_url, south_url)
        env = {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK, "DRS_TEARDOWN_DB": sqlite_db}
        south.set_fault("list", "error_5xx", times=None, status=403)
        run = cli(["run", "--targets", str(path), "--yes", "--output", "json", *FAST], env)
        d = json.loads(run.stdout)
        assert run.exit_code == d["exit_code"] == 3, run.output
        assert {j["job_id"]: j["outcome"] for j in d["jobs"]} == dict.fromkeys(ids[0], "deleted")
        south_doc = next(t for t in d["targets"] if t["label"] == "south")
        assert "planning failed" in south_doc["error"] and south_doc["counts"] == {}
        assert south.destructive_calls == [] and all(south.status_of(j) == "INCRE_TRANSFER_STARTED" for j in ids[1])
        st = json.loads(cli(["status", "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db}).stdout)
        assert st["runs"][0]["status"] == "interrupted"
        audit = cli(["audit", d["run_id"], "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
        assert "target_failed" in audit.stdout and "south" in audit.stdout

        south.clear_faults()
        resumed = cli(["resume", "--output", "json", *FAST], env)
        r = json.loads(resumed.stdout)
        assert resumed.exit_code == r["exit_code"] == 0, resumed.output
        assert r["counts"] == {"deleted": 4}
        assert all("error" not in t for t in r["targets"])
        assert all(south.status_of(j) in ("DELETED", None) for j in ids[1])
        assert dict(north.violations) == {} and dict(south.violations) == {}
    v = cli(["verify", d["run_id"], "--output", "json"], {"DRS_TEARDOWN_DB": sqlite_db})
    assert v.exit_code == 0 and json.loads(v.stdout)["ok"] is True


def test_a_plan_with_a_target_that_could_not_be_planned_exits_3(tmp_path: Path, sqlite_db: str) -> None:
    """`plan --targets`: the plan of the targets that answered is shown, the one that failed is named with its
    error, and the exit code says the plan is incomplete (3), in JSON and in text."""
    with two_regions() as regions:
        (north, north_url), (south, south_url) = regions
        north.add_jobs(2, JobSpec(status="INCRE_TRANSFER_STARTED"))
        path = north_and_south(tmp_path, north_url, south_url)
        env = {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK, "DRS_TEARDOWN_DB": sqlite_db}
        south.set_fault("list", "error_5xx", times=None, status=403)
        as_json = cli(["plan", "--targets", str(path), "--output", "json"], env)
        as_text = cli(["plan", "--targets", str(path)], env)
        assert north.destructive_calls == [] and south.destructive_calls == []
    d = json.loads(as_json.stdout)
    assert as_json.exit_code == d["exit_code"] == 3, as_json.output
    assert "planning failed" in next(t for t in d["targets"] if t["label"] == "south")["error"]
    assert len(d["items"]) == 2
    assert as_text.exit_code == 3 and "target south could not be planned" in as_text.stderr


def test_every_target_failing_while_planning_is_the_commands_error(tmp_path: Path, sqlite_db: str) -> None:
    with two_regions() as regions:
        path = north_and_south(tmp_path, regions[0][1], regions[1][1])
        for sim, _ in regions:
            sim.set_fault("list", "error_5xx", times=None, status=403)
        env = {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK, "DRS_TEARDOWN_DB": sqlite_db}
        run = cli(["run", "--targets", str(path), "--yes", "--output", "json", *FAST], env)
        assert all(sim.destructive_calls == [] for sim, _ in regions)
    d = json.loads(run.stdout)
    assert run.exit_code == d["exit_code"] != 0 and "403" in d["error"], run.output


def test_the_two_phase_path_records_a_target_that_failed_while_planning(tmp_path: Path, sqlite_db: str) -> None:
    """A runbook's plan() -> record() -> execute(): the failed target is in the plan's JSON, the trail and the
    summary (exit 3), and the run stays resumable."""
    import asyncio

    from orchestrator.config import Settings
    from orchestrator.store.repo import Store
    from orchestrator.usecases import Teardown

    with two_regions() as regions:
        (north, north_url), (south, south_url) = regions
        north.add_jobs(2, JobSpec(status="INCRE_TRANSFER_STARTED"))
        path = north_and_south(tmp_path, north_url, south_url)
        south.set_fault("list", "error_5xx", times=None, status=403)
        store = Store(sqlite_db)
        td = Teardown(Settings(poll_interval=0.05, db=sqlite_db), {"HUAWEICLOUD_SDK_AK": AK, "HUAWEICLOUD_SDK_SK": SK},
                      targets=parse_targets_file(str(path)), store=store)

        async def go():  # type: ignore[no-untyped-def]
            run_plan = await td.plan()
            assert run_plan.failed.keys() == {"south"} and run_plan.nothing_matched() is None
            assert next(t for t in run_plan.to_json()["targets"] if t["label"] == "south")["error"]
            td.record("runbook")
            return await td.execute()

        summary = asyncio.run(go())
    assert summary.exit_code == 3 and summary.counts == {"deleted": 2}
    assert next(t for t in summary.targets if t["label"] == "south")["error"].startswith("planning failed")
    run = store.run(summary.run_id)
    assert run is not None and run.status == "interrupted"
    assert "target_failed" in [r.trigger for r in store.records(summary.run_id)]
