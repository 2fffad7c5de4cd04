"""Seeded scenarios: a realistic, deterministic mix of tasks (same seed, same world, same ids)."""

from __future__ import annotations

import random

from .jobs import JobSpec
from .world import World

# Weights of the statuses of ordinary tasks: mostly running or stable, some finished or failed, a few moving.
_STATUS_WEIGHTS: tuple[tuple[str, int], ...] = (
    ("INCRE_TRANSFER_STARTED", 30),
    ("FULL_TRANSFER_COMPLETE", 10),
    ("PAUSING", 8),
    ("CONFIGURATION", 8),
    ("FULL_TRANSFER_STARTED", 5),
    ("CREATE_FAILED", 6),
    ("RELEASE_RESOURCE_COMPLETE", 6),
    ("WAITING_FOR_START", 3),
    ("CREATING", 3),
    ("STARTJOBING", 3),
    ("INCRE_TRANSFER_FAILED", 3),
    ("FULL_TRANSFER_FAILED", 2),
    ("START_JOB_FAILED", 2),
    ("RELEASE_RESOURCE_FAILED", 2),
    ("NODE_UPGRADE_COMPLETE", 2),
    ("REBUILD_NODE_FAILED", 1),
    ("CHANGE_JOB_FAILED", 1),
    ("NODE_UPGRADE_FAILED", 1),
)
_RUNNING = ("INCRE_TRANSFER_STARTED", "FULL_TRANSFER_COMPLETE", "PAUSING")
_DB_USE_WEIGHTS = (("migration", 45), ("sync", 35), ("cloudDataGuard", 20))
_ENGINES: dict[str, tuple[str, ...]] = {
    "migration": ("mysql", "mysql", "mysql", "mongodb", "postgresql", "redis"),
    "sync": ("mysql", "mysql", "postgresql", "mysql-to-kafka", "gaussdbv5", "oracle-to-gaussdbv5"),
    "cloudDataGuard": (
        "cloudDataGuard-mysql",
        "cloudDataGuard-mysql",
        "cloudDataGuard-taurus-to-mysql",
        "cloudDataGuard-ddm",
    ),
}
# Engines that can be billed yearly/monthly (SDK CreateJobReq).
_PERIOD_ENGINES = {"sync": "mysql", "cloudDataGuard": "cloudDataGuard-mysql"}
_APPS = (
    "orders",
    "billing",
    "crm",
    "inventory",
    "analytics",
    "auth",
    "payments",
    "catalog",
    "search",
    "ledger",
)
_ENVS = ("prod", "prod", "staging", "dev")
_TEAMS = ("dba", "platform", "data", "payments")
_SHORT = {"migration": "mig", "sync": "sync", "cloudDataGuard": "dr"}
_TASK_TYPES = ("FULL_INCR_TRANS", "FULL_INCR_TRANS", "FULL_INCR_TRANS", "FULL_TRANS", "INCR_TRANS")
_MAX_AGE_SECONDS = 90 * 86400


def _pick(rng: random.Random, weighted: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def seed_world(world: World, count: int, rng: random.Random, job_status: str | None = None) -> list[str]:
    """Add `count` task records (children included) to the world; returns the top-level ids in order.

    With job_status, every task is an ordinary pay-per-use task in that status (for benchmarks).
    """
    if count <= 0:
        return []
    ids: list[str] = []
    if job_status is not None:
        for n in range(count):
            ids.append(_add_plain(world, rng, n, status=job_status))
        return ids
    dual = max(1, count // 40) if count >= 20 else 0
    reedit = max(1, count // 25) if count >= 10 else 0
    period = max(1, round(count * 0.05)) if count >= 10 else 0
    plain = count - 3 * dual - 2 * reedit - period
    while plain < 0:  # tiny worlds: drop the special cases first
        if dual:
            dual, plain = dual - 1, plain + 3
        elif reedit:
            reedit, plain = reedit - 1, plain + 2
        else:
            period, plain = period - 1, plain + 1
    plan = ["dual"] * dual + ["reedit"] * reedit + ["period"] * period + ["plain"] * plain
    rng.shuffle(plan)
    for n, what in enumerate(plan):
        if what == "plain":
            ids.append(_add_plain(world, rng, n))
        elif what == "dual":
            ids.append(
                _add(
                    world,
                    rng,
                    n,
                    "cloudDataGuard",
                    "cloudDataGuard-mysql",
                    status=rng.choice(_RUNNING),
                    multi_write=True,
                    children=2,
                )
            )
        elif what == "reedit":
            ids.append(
                _add(
                    world,
                    rng,
                    n,
                    "sync",
                    "mysql",
                    status="INCRE_TRANSFER_STARTED",
                    children=1,
                    child_status=rng.choice(("CHILD_TRANSFER_STARTED", "CHILD_TRANSFER_COMPLETE")),
                )
            )
        else:
            use = rng.choice(("sync", "cloudDataGuard"))
            order = "CS" + "".join(rng.choices("0123456789ABCDEF", k=14))
            ids.append(
                _add(
                    world,
                    rng,
                    n,
                    use,
                    _PERIOD_ENGINES[use],
                    status=rng.choice(_RUNNING),
                    period_order_id=order,
                )
            )
    return ids


def _add_plain(world: World, rng: random.Random, n: int, status: str | None = None) -> str:
    use = _pick(rng, _DB_USE_WEIGHTS)
    return _add(world, rng, n, use, rng.choice(_ENGINES[use]), status=status or _pick(rng, _STATUS_WEIGHTS))


def _add(
    world: World,
    rng: random.Random,
    n: int,
    use: str,
    engine: str,
    *,
    status: str,
    multi_write: bool = False,
    children: int = 0,
    child_status: str = "CHILD_TRANSFER_STARTED",
    period_order_id: str | None = None,
) -> str:
    app, env = rng.choice(_APPS), rng.choice(_ENVS)
    tags = [{"key": "app", "value": app}, {"key": "env", "value": env}]
    if rng.random() < 0.5:
        tags.append({"key": "owner", "value": rng.choice(_TEAMS)})
    task_type = "FULL_INCR_TRANS" if status.startswith("INCRE") or multi_write else rng.choice(_TASK_TYPES)
    spec = JobSpec(
        status=status,
        db_use_type=use,
        engine_type=engine,
        name=f"{app}-{env}-{_SHORT[use]}-{n:03d}",
        period_order_id=period_order_id,
        multi_write=multi_write,
        children=children,
        child_status=child_status,
        task_type=task_type,
        description=f"{app} {env} {use}",
    )
    direction = "down" if use == "cloudDataGuard" and rng.random() < 0.3 else "up"
    return world.add(
        spec,
        created_ago=rng.uniform(3600, _MAX_AGE_SECONDS),
        tags=tags,
        net_type=rng.choice(("vpc", "vpc", "vpn", "eip")),
        job_direction=direction,
    )
