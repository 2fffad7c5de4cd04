"""The two BSS (billing) calls a yearly/monthly DRS task needs before it can be deleted, as the Terraform
provider makes them (huaweicloud/services/drs/resource_huaweicloud_drs_job.go, cbc.GetResourceIDsByOrder,
common.UnsubscribePrePaidResource; models of huaweicloudsdkbss v2):

* ``POST {bss}/v2/orders/suscriptions/resources/query`` (sic, "suscriptions"): body ``{"order_id",
  "only_main_resource": 1, "offset", "limit"}``, answer ``{"total_count", "data": [{"resource_id", ...}]}``.
  A read: retried like the DRS reads.
* ``POST {bss}/v2/orders/subscriptions/resources/unsubscribe``: body ``{"resource_ids": [...],
  "unsubscribe_type": 1}``, answer ``{"order_ids": [...], "fail_resource_infos": [{"resource_id", "error_code",
  "error_msg"}]}``. A billing action: destructive, never re-sent once it may have left (OutcomeUnknown).

Requests carry the same credentials (one httpx.Auth; AK/SK signs the BSS host), X-Language, pacing, budget and
recorder as the DRS calls (Exchange api "bss-query" / "bss-unsubscribe").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.clock import Clock
from orchestrator.drs import reading
from orchestrator.drs.pacing import Pacer
from orchestrator.drs.reading import Reply
from orchestrator.drs.transport import DEFAULT_EXCHANGE_DEADLINE, DEFAULT_TIMEOUT, Budget, HttpCore, RetryPolicy
from orchestrator.wire import Recorder

QUERY_PATH = "/v2/orders/suscriptions/resources/query"  # spelled as BSS (and Terraform) spell it
UNSUBSCRIBE_PATH = "/v2/orders/subscriptions/resources/unsubscribe"
BSS_PATHS = {"bss-query": QUERY_PATH, "bss-unsubscribe": UNSUBSCRIBE_PATH}
UNSUBSCRIBE_TYPE = 1  # 1: unsubscribe the resources (Terraform's only value)
QUERY_PAGE = 100
MAX_QUERY_PAGES = 50  # an order holds a handful of resources; a service paging for ever is not followed
ALREADY_UNSUBSCRIBED = "CBC.30000067"  # "The resource has been unsubscribed" (Terraform treats it as gone)


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class OrderResource(_Wire):
    resource_id: str
    is_main_resource: int | None = None
    status: int | None = None


class QueryAnswer(_Wire):
    total_count: int
    data: list[OrderResource] = Field(default_factory=list)

    @field_validator("data", mode="before")
    @classmethod
    def _null_list(cls, value: object) -> object:
        return [] if value is None else value


class FailResourceInfo(_Wire):
    resource_id: str
    error_code: str | None = None
    error_msg: str | None = None


class UnsubscribeAnswer(_Wire):
    order_ids: list[str] = Field(default_factory=list)
    fail_resource_infos: list[FailResourceInfo] = Field(default_factory=list)

    @field_validator("order_ids", "fail_resource_infos", mode="before")
    @classmethod
    def _null_list(cls, value: object) -> object:
        return [] if value is None else value


@dataclass(frozen=True)
class Refusal:
    """BSS refused to unsubscribe one resource: its code and message as BSS gave them."""

    resource_id: str
    error_code: str | None
    error_msg: str | None

    def __str__(self) -> str:
        return " ".join(p for p in (self.error_code, reading.quoted(self.error_msg)) if p) or "refused"


@dataclass(frozen=True)
class UnsubscribeResult:
    """One unsubscribe call: the refunding order ids, and each resource BSS refused (by resource id)."""

    order_ids: tuple[str, ...]
    refused: dict[str, Refusal] = field(default_factory=dict)
    request_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.refused


class BssClient:
    """Async BSS v2 client for the two order calls; made by `DrsClient.bss(url)` or on its own."""

    def __init__(self, base_url: str, *, auth: httpx.Auth | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 verify: bool | str = True, clock: Clock | None = None, pacer: Pacer | None = None,
                 retry: RetryPolicy | None = None, recorder: Recorder | None = None, language: str = "en-us",
                 budget: Budget | None = None, stats: Counter[str] | None = None, max_concurrency: int = 4,
                 exchange_deadline: float = DEFAULT_EXCHANGE_DEADLINE) -> None:
        self._core = HttpCore(base_url, setting="BSS endpoint", auth=auth, transport=transport, timeout=timeout,
                              verify=verify, clock=clock, pacer=pacer, retry=retry, recorder=recorder,
                              max_concurrency=max_concurrency, exchange_deadline=exchange_deadline,
                              language=language, budget=budget, stats=stats)

    @property
    def recorder(self) -> Recorder | None:
        return self._core.recorder

    @recorder.setter
    def recorder(self, value: Recorder | None) -> None:
        self._core.recorder = value

    @property
    def budget(self) -> Budget:
        return self._core.budget

    @property
    def stats(self) -> Counter[str]:
        return self._core.stats

    @property
    def base_url(self) -> str:
        return self._core.base_url

    async def __aenter__(self) -> BssClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._core.aclose()

    async def query_resources(self, order_id: str, *, job_ids: Sequence[str] = ()) -> list[str]:
        """The main resource ids of a yearly/monthly order (what unsubscribe takes; not the job id). Empty while
        BSS does not list the order yet (Terraform waits for it). `job_ids` only label the recorded exchange."""
        return list(await self.resource_statuses(order_id, job_ids=job_ids))

    async def resource_statuses(self, order_id: str, *, job_ids: Sequence[str] = ()) -> dict[str, int | None]:
        """The order's main resource ids with BSS's status of each (2 in use, 3 closed: unsubscribed)."""
        if not order_id.strip():
            raise ValueError("order_id is empty")
        found: dict[str, int | None] = {}
        for page in range(MAX_QUERY_PAGES):
            body = {"order_id": order_id, "only_main_resource": 1, "offset": page * QUERY_PAGE, "limit": QUERY_PAGE}

            def parse(reply: Reply) -> QueryAnswer:
                return reading.validate("bss-query", reply, QueryAnswer, reading.parse_json("bss-query", reply))

            answer = await self._core.call("bss-query", "POST", QUERY_PATH, body, tuple(job_ids), parse)
            for r in answer.data:
                found.setdefault(r.resource_id, r.status)
            if not answer.data or len(found) >= answer.total_count:
                break
        return found

    async def unsubscribe(self, resource_ids: Sequence[str], *, job_ids: Sequence[str] = ()) -> UnsubscribeResult:
        """Unsubscribe the resources (unsubscribe_type 1): a billing action, sent at most once."""
        ids = list(dict.fromkeys(resource_ids))
        if not ids:
            raise ValueError("no resource ids to unsubscribe")

        def parse(reply: Reply) -> UnsubscribeResult:
            answer = reading.validate("bss-unsubscribe", reply, UnsubscribeAnswer,
                                      reading.parse_json("bss-unsubscribe", reply))
            refused = {f.resource_id: Refusal(f.resource_id, f.error_code, f.error_msg)
                       for f in answer.fail_resource_infos}
            return UnsubscribeResult(tuple(answer.order_ids), refused, reply.request_id)

        return await self._core.call("bss-unsubscribe", "POST", UNSUBSCRIBE_PATH,
                                     {"resource_ids": ids, "unsubscribe_type": UNSUBSCRIBE_TYPE}, tuple(job_ids),
                                     parse, destructive=True)


__all__ = ["ALREADY_UNSUBSCRIBED", "BSS_PATHS", "BssClient", "Refusal", "UnsubscribeResult"]
