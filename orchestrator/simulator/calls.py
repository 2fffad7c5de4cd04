"""The four DRS calls over the world: validated bodies in, (HTTP status, JSON body) out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .batch_rules import BatchRules
from .bodies import ListQuery, page_bounds, parse_batch_jobs, parse_id_batch, parse_list
from .jobs import Job
from .messages import drs_message
from .world import World

Reply = tuple[int, dict[str, Any]]


def _missing(world: World, job_id: str, lang: str) -> dict[str, Any]:
    code = world.missing_code(job_id)
    # batch-status and batch-detail spell it error_message (batch-jobs says error_msg).
    return {"id": job_id, "error_code": code, "error_message": drs_message(code, lang)}


def _shown(job: Job, stale: bool) -> str:
    """The status an answer shows: the current one, or (a stale read) the one before it."""
    return job.history[-2] if stale and len(job.history) >= 2 else job.status


def _page(world: World, data: dict[str, Any], lang: str, stale: bool,
          render: Callable[[Job], dict[str, Any]]) -> list[dict[str, Any]]:
    """The requested page of a batch-status/batch-detail call, each known id rendered, unknown ones missing."""
    req = parse_id_batch(data)
    start, end = page_bounds(len(req.ids), req.cur_page, req.per_page)
    with world.lock:
        world.settle()
        results = []
        for job_id in req.ids[start:end]:
            job = world.get(job_id)
            if job is None:
                results.append(_missing(world, job_id, lang))
                continue
            item = render(job)
            item["status"] = _shown(job, stale)
            results.append(item)
            world.served(job, item["status"])
            if "period_order" in item:
                job.order_unseen = False  # a detail answer showed the order
    return results


def _unknown_answer(world: World, results: list[dict[str, Any]], status: int) -> Reply:
    """A read that met unknown or purged ids: a 400 that lists every id, or (profile) only the failing ones."""
    if status == 400 and world.state.profile.unknown_id_results == "failing":
        results = [r for r in results if r.get("error_code")]
    return status, {"count": len(results), "results": results}


def batch_status(world: World, data: dict[str, Any], lang: str, stale: bool = False) -> Reply:
    """POST /jobs/batch-status: one {id, status} per id of the page; unknown ids carry an error_code."""
    results = _page(world, data, lang, stale, lambda job: {"id": job.id, "status": job.status})
    if any("error_code" in r for r in results):
        return _unknown_answer(world, results, world.state.profile.batch_status_unknown_http_status)
    return 200, {"count": len(results), "results": results}


def batch_detail(world: World, data: dict[str, Any], lang: str, stale: bool = False) -> Reply:
    """POST /jobs/batch-detail: QueryJobResp per id; an unknown id makes it a 400 that still lists results."""
    results = _page(world, data, lang, stale, world.detail_of)
    if any(r.get("error_code") for r in results):
        return _unknown_answer(world, results, 400)
    return 200, {"count": len(results), "results": results}


def batch_jobs(rules: BatchRules, world: World, data: dict[str, Any], lang: str) -> Reply:
    """DELETE /jobs/batch-jobs: 202 with per-item results in request order."""
    items = parse_batch_jobs(data, world.state.profile.batch_jobs_max_items)
    results = rules.apply(items, lang)
    return 202, {"count": len(results), "results": results}


def _matches(job: Job, q: ListQuery) -> bool:
    if job.db_use_type != q.db_use_type:
        return False
    if q.ids and job.id not in q.ids:
        return False
    if q.name and q.name.lower() not in job.name.lower():
        return False
    if q.status and job.status != q.status:
        return False
    if q.engine_type and job.engine_type != q.engine_type:
        return False
    if q.net_type and job.net_type != q.net_type:
        return False
    if q.enterprise_project_id is not None and job.enterprise_project_id != q.enterprise_project_id:
        return False
    tags = {t["key"]: t["value"] for t in job.tags}
    return all(tags.get(k) == v for k, v in q.tags.items())


def list_jobs(world: World, data: dict[str, Any], lang: str, stale: bool = False) -> Reply:
    """POST /jobs: one scenario's top-level tasks, newest first, children nested; DELETED ones are gone."""
    q = parse_list(data)
    with world.lock:
        world.settle()
        rows = sorted((j for j in world.top_level() if _matches(j, q)), key=lambda j: (-j.created_mono, j.id))
        if q.cur_page == 0:
            # In the list API cur_page 0 also means "everything" (§6); per_page is still range-checked.
            page_bounds(len(rows), 1, q.per_page)
            start, end = 0, len(rows)
        else:
            start, end = page_bounds(len(rows), q.cur_page, q.per_page)
        jobs = []
        for job in rows[start:end]:
            entry = world.list_entry(job)
            entry["status"] = _shown(job, stale)
            jobs.append(entry)
            world.served(job, entry["status"])
            for row in entry["children"]:
                child = world.get(row["id"])
                if child is not None:
                    world.served(child, row["status"])
    return 200, {"total_record": len(rows), "jobs": jobs}
