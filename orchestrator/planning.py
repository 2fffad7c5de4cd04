"""Selection and planning: which tasks, what will happen to each, and why. Read-only."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fnmatch
import hashlib
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.drs.client import DrsClient
from orchestrator.drs.codes import INVALID_PARAMETER_CODES, NOT_FOUND_CODES, StatusClass, classify
from orchestrator.drs.models import DB_USE_TYPES, JobDetail, JobInfo
from orchestrator.errors import DrsError, SelectionError

# Selection and its parsers live in orchestrator.selection; importable from here too while callers move.
from orchestrator.selection import JOB_ID_RE, Selection, parse_job_ids, parse_tag  # noqa: F401

PLAN_FORMAT = "drs-teardown-plan/1"



class Action(enum.Enum):
    """What the plan will do with a task."""

    STOP_THEN_DELETE = "stop_then_delete"
    UNSUBSCRIBE_THEN_DELETE = "unsubscribe_then_delete"  # --unsubscribe-prepaid: BSS unsubscribe, no terminate
    DELETE = "delete"
    WAIT = "wait"  # transitional status: wait for the service, then decide
    SKIP = "skip"
    BLOCK = "block"


@dataclass(frozen=True)
class PlanItem:
    """One task, what will happen to it, and why."""

    job_id: str
    action: Action
    reason: str
    status: str | None = None
    name: str | None = None
    db_use_type: str | None = None
    engine_type: str | None = None
    order_id: str | None = None
    parent_job_id: str | None = None
    children: tuple[str, ...] = ()
    error_code: str | None = None  # the service refused this id itself (DRS.M00202): the task ends failed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["action"] = self.action.value
        d["children"] = list(self.children)
        if d["error_code"] is None:
            del d["error_code"]  # (the plan document as before for every task the service answered)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlanItem:
        return cls(**{**d, "action": Action(d["action"]), "children": tuple(d.get("children") or ())})


@dataclass(frozen=True)
class Plan:
    """A reviewed plan: targets, their statuses and planned actions, and a hash over them."""

    project_id: str
    endpoint: str
    selection: Selection
    items: tuple[PlanItem, ...]
    created_at: datetime
    listed: int = 0
    detail_calls: int = field(default=0, compare=False)

    def counts(self) -> dict[str, int]:
        return action_counts(self.items)

    @property
    def hash(self) -> str:
        return plan_hash(self.project_id, self.items)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "project_id": self.project_id,
            "endpoint": self.endpoint,
            "created_at": self.created_at.isoformat(),
            "selection": self.selection.to_dict(),
            "items": [it.to_dict() for it in self.items],
            "counts": self.counts(),
            "hash": self.hash,
        }


def action_counts(items: Iterable[PlanItem]) -> dict[str, int]:
    """Planned action -> tasks, in the order the actions first appear."""
    out: dict[str, int] = {}
    for it in items:
        out[it.action.value] = out.get(it.action.value, 0) + 1
    return out


def plan_hash(project_id: str, items: Sequence[PlanItem]) -> str:
    """SHA-256 over the project and each item's id, status and action (sorted canonical JSON)."""
    body = json.dumps({"project_id": project_id,
                       "items": [[i.job_id, i.status, i.action.value] for i in items]},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


async def resolve(client: DrsClient, selection: Selection) -> tuple[list[str], int, dict[str, list[str]]]:
    """Ids to plan: the explicit ones, then the list API's matches for the filters; and each listed parent's
    children (the list's `children[]`: re-edit sub-jobs of sync tasks, the children of dual-active DR tasks)."""
    ids = list(selection.job_ids)
    listed = 0
    children: dict[str, list[str]] = {}
    if selection.uses_filters:
        kinds = [selection.db_use_type] if selection.db_use_type else list(DB_USE_TYPES)
        pages = await asyncio.gather(*(client.list_jobs(k, status=selection.status,
                                                        engine_type=selection.engine_type) for k in kinds))
        seen = set(ids)
        for jobs in pages:
            for job in jobs:
                listed += 1
                if selection.name_glob and not fnmatch.fnmatchcase(job.name or "", selection.name_glob):
                    continue
                if job.children:
                    children[job.id] = [c.id for c in job.children]
                if job.id not in seen:
                    seen.add(job.id)
                    ids.append(job.id)
    return ids, listed, children


PARENT_KINDS = ("sync", "cloudDataGuard")  # re-edit children (sync) and dual-active children (DR)


async def children_of_ids(client: DrsClient, details: dict[str, JobDetail], explicit: Sequence[str],
                          known: dict[str, list[str]],
                          listing: asyncio.Future[list[list[JobInfo]]] | None = None) -> dict[str, list[str]]:
    """Children of explicitly selected parents, found through the list API (detail's `children` lists only the
    children whose EIP binding failed; whether children are also top-level rows is unknown, reference §14.7).

    `listing`: the sync and cloudDataGuard lists, started while the details were read (another API, another
    pacing budget); cancelled when no selected task can have children."""
    wanted = {j for j in explicit if j in details and j not in known and not details[j].parent_id
              and details[j].db_use_type in PARENT_KINDS}
    found: dict[str, list[str]] = {}
    if not wanted:
        if listing is not None:
            listing.cancel()
            with contextlib.suppress(asyncio.CancelledError, DrsError):
                await listing
        return found
    if listing is not None:
        pages = await listing
    else:
        kinds = sorted({details[j].db_use_type or "" for j in wanted})
        pages = await asyncio.gather(*(client.list_jobs(k) for k in kinds))
    for jobs in pages:
        for job in jobs:
            if job.id in wanted and job.children:
                found[job.id] = [c.id for c in job.children]
    return found


UNSURE_REREADS = 3  # a detail that is missing, unknown or unreadable is read again this many times before deciding


def _unsure(detail: JobDetail | None) -> bool:
    if detail is None:
        return True
    if detail.error_code:
        # A refused id (narrowed to it alone) is an answer, not a bad read: it is not read again.
        return detail.error_code not in NOT_FOUND_CODES and detail.error_code not in INVALID_PARAMETER_CODES
    return classify(detail.status) is StatusClass.UNKNOWN


async def read_details(client: DrsClient, ids: Sequence[str]) -> dict[str, JobDetail]:
    """batch-detail for `ids`; reads are idempotent, so an id whose answer is missing, unknown or an error is read
    again (with backoff) before the plan decides on it — one bad answer never blocks a task."""
    if not ids:
        return {}
    details = {k: a.item for k, a in (await client.batch_detail(ids)).items()}
    for attempt in range(UNSURE_REREADS):
        unsure = [i for i in ids if _unsure(details.get(i))]
        if not unsure:
            break
        await client.clock.sleep(0.5 * 2 ** attempt)
        details.update({k: a.item for k, a in (await client.batch_detail(unsure)).items()
                        if not _unsure(a.item) or k not in details})
    return details


def decide(detail: JobDetail, parents: dict[str, JobDetail], selected: set[str],
           parent_of: dict[str, str] | None = None, children: dict[str, list[str]] | None = None, *,
           unsubscribe_prepaid: bool = False) -> PlanItem:
    """The policy for one task, from its freshly read detail (and the list's parent/child relations)."""
    parent_id = detail.parent_id or (parent_of or {}).get(detail.id)
    listed_children = (children or {}).get(detail.id, [])
    base = {"job_id": detail.id, "status": detail.status, "name": detail.name, "db_use_type": detail.db_use_type,
            "engine_type": detail.engine, "order_id": detail.order_id, "parent_job_id": parent_id,
            "children": tuple(listed_children or [c.id for c in detail.children]) if detail.multi_write
            else tuple(listed_children)}
    if detail.error_code in NOT_FOUND_CODES:
        return PlanItem(action=Action.SKIP, reason=f"not found ({detail.error_code})", **base)
    if detail.error_code in INVALID_PARAMETER_CODES:
        return PlanItem(action=Action.BLOCK, reason=f"refused by the service: {detail.error_code} "
                        f"{detail.error_message or ''}".strip(), error_code=detail.error_code, **base)
    if detail.error_code:
        return PlanItem(action=Action.BLOCK, reason=f"detail unreadable: {detail.error_code} "
                        f"{detail.error_message or ''}".strip(), **base)
    cls = classify(detail.status)
    if cls is StatusClass.GONE:
        return PlanItem(action=Action.SKIP, reason="already deleted", **base)
    if cls is StatusClass.UNKNOWN:
        return PlanItem(action=Action.BLOCK, reason=f"unknown status {detail.status!r}: not acting on it", **base)
    parent = parents.get(parent_id or "")
    if parent is not None and parent.multi_write:
        if parent.id in selected:
            return PlanItem(action=Action.SKIP,
                            reason=f"dual-active DR child: torn down with its parent {parent.id}", **base)
        return PlanItem(action=Action.BLOCK,
                        reason=f"dual-active DR child: only its parent {parent.id} can be stopped or deleted; "
                               "select the parent", **base)
    if detail.order_id and cls not in (StatusClass.DELETABLE, StatusClass.WAIT) and unsubscribe_prepaid:
        return PlanItem(action=Action.UNSUBSCRIBE_THEN_DELETE,
                        reason=f"yearly/monthly order {detail.order_id}: unsubscribe it (BSS, a billing action), "
                               "wait for the release without terminate, then delete", **base)
    if detail.order_id and cls not in (StatusClass.DELETABLE, StatusClass.WAIT):
        return PlanItem(action=Action.BLOCK,
                        reason=f"yearly/monthly order {detail.order_id}: unsubscribe the order first, then re-run",
                        **base)
    if cls is StatusClass.DELETABLE:
        return PlanItem(action=Action.DELETE, reason=f"{detail.status} is deletable", **base)
    if cls is StatusClass.WAIT:
        return PlanItem(action=Action.WAIT, reason=f"{detail.status} is transitional: wait, then decide", **base)
    if cls is StatusClass.RELEASE_FAILED:
        return PlanItem(action=Action.STOP_THEN_DELETE, reason="a previous stop failed: stop again", **base)
    why = f"{detail.status} must be stopped first"
    if parent_id and parent_id in selected:
        why += f" (re-edit child of {parent_id}: removed before its parent)"
    return PlanItem(action=Action.STOP_THEN_DELETE, reason=why, **base)


Selected = Callable[[Sequence[str], Mapping[str, Sequence[str]]], Awaitable[None]]
Decided = Callable[[list[PlanItem]], Awaitable[None]]
STREAM_CHUNK = 100  # ids in the first streamed batch of details (ten batch-detail calls) ...
STREAM_CHUNK_MAX = 1000  # ... each next batch twice the last, up to this: the first stops go out early, and a
# large plan is recorded in a few batches (each costs a transaction, an overlap check and the creation lock)


def stream_batches(ids: Sequence[str]) -> list[Sequence[str]]:
    """The streamed batches of `ids`: 100, 200, 400, 800, then 1,000 at a time."""
    out, i, size = [], 0, STREAM_CHUNK
    while i < len(ids):
        out.append(ids[i : i + size])
        i, size = i + size, min(size * 2, STREAM_CHUNK_MAX)
    return out


async def make_plan(client: DrsClient, selection: Selection, *, endpoint: str, now: datetime,
                    unsubscribe_prepaid: bool = False, on_selected: Selected | None = None,
                    on_items: Decided | None = None) -> Plan:
    """Select, read every target's detail (≤10 ids a call), add the children of selected parents, and decide.

    `on_selected(ids, listed children)`: awaited once the selection is known, before any detail read (the rails
    that need only its size). `on_items(items)`: the plan pipelined into the run — awaited with each batch of
    items that can be decided alone as soon as its details are read (see `independent`); the Plan returned
    still holds every item, the streamed ones included, decided the same way."""
    selection.validate()
    ids, listed, children = await resolve(client, selection)
    if on_selected is not None:
        await on_selected(ids, children)
    listing = None
    if selection.job_ids and not selection.uses_filters:
        # Selected by id: their children come from the list API; list while the details are read.
        listing = asyncio.ensure_future(asyncio.gather(*(client.list_jobs(k) for k in PARENT_KINDS)))
    try:
        if on_items is None:
            details = await read_details(client, ids)
        else:
            details = await _stream(client, ids, children, listing, selection, on_items,
                                    unsubscribe_prepaid=unsubscribe_prepaid)
    except BaseException:
        if listing is not None:
            _abandon(listing)
        raise
    children.update(await children_of_ids(client, details, selection.job_ids, children, listing))
    # Children go with their parents: planned as tasks of their own, right after the parent.
    parent_of = {c: p for p, kids in children.items() for c in kids}
    extra = sorted({c for kids in children.values() for c in kids} - set(details) - set(ids))
    if extra:
        details.update(await read_details(client, extra))
    parent_ids = {d.parent_id for d in details.values() if d.parent_id} - set(details)
    parents = {k: a.item for k, a in (await client.batch_detail(sorted(parent_ids))).items()} if parent_ids else {}
    parents.update(details)
    ordered: list[str] = []
    for job_id in ids:
        if job_id not in parent_of or parent_of[job_id] not in ids:
            ordered.append(job_id)
            ordered += [c for c in children.get(job_id, []) if c not in ordered]
    ordered += [c for c in extra if c not in ordered]
    selected = set(ordered)
    items: list[PlanItem] = []
    kept: set[str] = set()
    for job_id in ordered:
        parent = parent_of.get(job_id)
        if parent is not None and parent in selected and parent not in kept:
            continue  # its parent was filtered out (tags): the child is not selected either
        if job_id not in details:
            items.append(PlanItem(job_id=job_id, action=Action.BLOCK, reason="batch-detail did not return it",
                                  parent_job_id=parent))
            kept.add(job_id)
            continue
        item = decide(details[job_id], parents, selected, parent_of, children,
                      unsubscribe_prepaid=unsubscribe_prepaid)
        if selection.tags and parent is None and item.action is not Action.SKIP \
                and not _tagged(details[job_id], selection):
            continue
        items.append(item)
        kept.add(job_id)
    return Plan(project_id=client.project_id, endpoint=endpoint, selection=selection, items=tuple(items),
                created_at=now, listed=listed)


def independent(detail: JobDetail, parent_of: Mapping[str, str], children: Mapping[str, Sequence[str]], *,
                children_known: bool) -> bool:
    """A task whose plan item its own detail decides: no parent, no children (listed, or possible while the
    children listing is still running). The plan's final pass decides it the same way."""
    if detail.parent_id or detail.id in parent_of or children.get(detail.id) or detail.error_code:
        return False
    return children_known or detail.db_use_type not in PARENT_KINDS


async def _stream(client: DrsClient, ids: Sequence[str], children: Mapping[str, Sequence[str]],
                  listing: asyncio.Future[list[list[JobInfo]]] | None, selection: Selection, on_items: Decided,
                  *, unsubscribe_prepaid: bool) -> dict[str, JobDetail]:
    """Read the details in batches (all in flight, paced by the client) and hand on each batch's independent
    items as soon as it is read; the rest wait for the plan's final pass."""
    details: dict[str, JobDetail] = {}
    known = {p: list(kids) for p, kids in children.items()}
    parent_of = {c: p for p, kids in known.items() for c in kids}
    reads = {asyncio.ensure_future(read_details(client, batch)) for batch in stream_batches(ids)}
    waiting: set[asyncio.Future[Any]] = set(reads)
    children_known = listing is None
    if listing is not None:
        waiting.add(listing)
    deferred: list[str] = []
    try:
        while reads or (deferred and listing is not None and not listing.done()):
            done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            fresh: list[str] = []
            for f in done:
                if f is listing:
                    with contextlib.suppress(DrsError):  # the final pass awaits it again and raises then
                        for jobs in f.result():
                            for job in jobs:
                                if job.children:
                                    known[job.id] = [c.id for c in job.children]
                                    parent_of.update((c.id, job.id) for c in job.children)
                        children_known = True
                        fresh += deferred
                        deferred = []
                    continue
                reads.discard(f)
                part = f.result()
                details.update(part)
                fresh += list(part)
            items = []
            for job_id in fresh:
                detail = details.get(job_id)
                if detail is None or detail.id != job_id:
                    continue
                if not independent(detail, parent_of, known, children_known=children_known):
                    if not children_known:
                        deferred.append(job_id)
                    continue
                item = decide(detail, details, set(), parent_of, known, unsubscribe_prepaid=unsubscribe_prepaid)
                if selection.tags and item.action is not Action.SKIP and not _tagged(detail, selection):
                    continue
                items.append(item)
            if items:
                await on_items(items)
    except BaseException:
        for f in reads:
            _abandon(f)
        raise
    return details


def _abandon(future: asyncio.Future[Any]) -> None:
    """Cancel a call no longer wanted; one that already failed has its error retrieved (the first error is the
    one raised), or asyncio logs "exception was never retrieved" with a traceback when it is collected."""
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()


def _tagged(detail: JobDetail, selection: Selection) -> bool:
    tags = {(t.key, t.value or "") for t in detail.tags}
    return all(tag in tags for tag in selection.tags)


def load_plan(data: dict[str, Any], source: str) -> Plan:
    """Read a saved plan; refuses one whose hash does not match its items."""
    if data.get("format") != PLAN_FORMAT:
        raise SelectionError(f"{source}: not a drs-teardown plan (format {data.get('format')!r})")
    try:
        items = tuple(PlanItem.from_dict(d) for d in data["items"])
        sel = data.get("selection") or {}
        selection = Selection(**{k: tuple(tuple(x) if isinstance(x, list) else x for x in v)
                                 if isinstance(v, list) else v for k, v in sel.items()})
        plan = Plan(project_id=data["project_id"], endpoint=data.get("endpoint", ""), selection=selection,
                    items=items, created_at=datetime.fromisoformat(data["created_at"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SelectionError(f"{source}: malformed plan ({exc})") from exc
    if plan.hash != data.get("hash"):
        raise SelectionError(f"{source}: the plan's hash does not match its contents (edited after review?)")
    return plan


def drift(reviewed: Plan, live: Plan) -> list[str]:
    """Differences that change an action: a target added or removed, or a different planned action."""
    problems: list[str] = []
    if reviewed.project_id != live.project_id:
        problems.append(f"project {reviewed.project_id} was reviewed, this run targets {live.project_id}")
    old = {i.job_id: i for i in reviewed.items}
    new = {i.job_id: i for i in live.items}
    for job_id in old.keys() - new.keys():
        problems.append(f"{job_id}: in the reviewed plan, no longer selected")
    for job_id in new.keys() - old.keys():
        problems.append(f"{job_id}: selected now, not in the reviewed plan")
    for job_id in old.keys() & new.keys():
        if old[job_id].action != new[job_id].action:
            problems.append(f"{job_id}: reviewed {old[job_id].action.value} ({old[job_id].status}), "
                            f"now {new[job_id].action.value} ({new[job_id].status})")
    return problems
