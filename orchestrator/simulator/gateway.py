"""APIG in front of DRS, BSS and IAM: route, authenticate, throttle, inject faults, validate, call, answer."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from . import calls
from .answers import distort
from .batch_rules import BatchRules
from .billing import Billing
from .bodies import BadRequest, parse_json
from .credentials import Authenticator, AuthOutcome
from .faults import Decision, FaultInjector
from .ledger import Ledger
from .messages import (
    BSS_ERRORS,
    DRS_ERRORS,
    UNSUPPORTED_MEDIA_MSG,
    apigw_error,
    bss_message,
    drs_error,
    keystone_error,
    language,
)
from .replies import Reply, Request
from .world import World

_PROJECT_ROUTE = re.compile(
    r"^/v3/(?P<project>[^/]+)/jobs(?P<rest>(/batch-status|/batch-detail|/batch-jobs)?)$"
)
_ROUTES: dict[tuple[str, str], str] = {
    ("POST", ""): "list",
    ("POST", "/batch-status"): "batch-status",
    ("POST", "/batch-detail"): "batch-detail",
    ("DELETE", "/batch-jobs"): "batch-jobs",
}
# BSS paths, spelled as the Terraform provider spells them ("suscriptions" in the query is not a typo of ours).
_GLOBAL_ROUTES: dict[tuple[str, str], str] = {
    ("POST", "/v3/auth/tokens"): "tokens",
    ("POST", "/v2/orders/suscriptions/resources/query"): "bss-query",
    ("POST", "/v2/orders/subscriptions/resources/unsubscribe"): "bss-unsubscribe",
}
_BSS = ("bss-query", "bss-unsubscribe")


def match_route(method: str, path: str) -> tuple[str | None, str | None]:
    """(API name, path project id) for a request, or (None, None) when no API is published there."""
    if (method, path) in _GLOBAL_ROUTES:
        return _GLOBAL_ROUTES[(method, path)], None
    m = _PROJECT_ROUTE.match(path)
    if m is None:
        return None, None
    return _ROUTES.get((method, m.group("rest"))), m.group("project")


@dataclass
class _Call:
    """One request on its way through the gateway."""

    request: Request
    entry: dict[str, Any]
    lang: str
    route: str | None = None
    project: str | None = None


class Gateway:
    """Turns a Request into a Reply; every request is recorded in the ledger before its answer goes out."""

    def __init__(self, *, project_id: str, world: World, rules: BatchRules, billing: Billing,
                 authenticator: Authenticator, faults: FaultInjector, ledger: Ledger,
                 inspect: Callable[[str, str, bytes], tuple[int, Any]]) -> None:
        self.project_id = project_id
        self.world = world
        self.rules = rules
        self.billing = billing
        self.authenticator = authenticator
        self.faults = faults
        self.ledger = ledger
        self.inspect = inspect

    def handle(self, request: Request) -> Reply:
        if request.path.startswith("/_sim/"):
            status, body = self.inspect(request.method, request.path, request.body or b"")
            return Reply(status, body, {"X-Request-Id": request.request_id})
        started = time.perf_counter()
        call = _Call(request, self._entry(request), language(request.headers.get("x-language")))
        self.ledger.language(request.headers.get("x-language"))
        reply = self._through(call)
        reply.headers.setdefault("X-Request-Id", request.request_id)
        entry = call.entry
        entry["dropped"] = reply.mode == "drop"
        entry["status"] = None if reply.mode in ("drop", "freeze") else reply.status
        if isinstance(reply.body, dict):
            entry["error_code"] = reply.body.get("error_code")
        entry["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        # Recorded before the answer goes out, so a client that got its response also finds it in the log.
        self.ledger.request(entry)
        return reply

    def _entry(self, request: Request) -> dict[str, Any]:
        return {
            "method": request.method,
            "path": request.path,
            "route": None,
            "status": None,
            "request_id": request.request_id,
            "auth": "none",
            "identity": "",
            "error_code": None,
            "dropped": False,
            "fault": None,
            "language": (request.headers.get("x-language") or "").strip().lower(),
            "at": self.world.state.clock.now().isoformat(),
        }

    def _through(self, call: _Call) -> Reply:
        request, lang = call.request, call.lang
        if request.body is None:
            status, body = apigw_error("APIGW.0201", request.request_id, lang=lang)
            return Reply(status, body, {"Connection": "close"})
        call.route, call.project = match_route(request.method, request.path)
        call.entry["route"] = call.route
        if call.route is None:
            return Reply(*apigw_error("APIGW.0101", request.request_id, lang=lang))
        auth = None
        if call.route != "tokens":
            auth = self._authenticate(call)
            if not auth.ok:
                return Reply(*apigw_error(auth.error_code or "APIGW.0301", request.request_id,
                                          auth.error_detail, lang))
        decision = self.faults.decide(call.route)
        call.entry["fault"] = decision.kind
        if decision.kind:
            self.ledger.fault(call.route, decision.kind)
        if decision.latency > 0:
            time.sleep(decision.latency)
        early = self._early_fault(call, decision)
        if early is not None:
            return early
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return Reply(415, {"error_code": "DRS.M00200", "error_msg": UNSUPPORTED_MEDIA_MSG[lang == "zh-cn"]})
        if call.route not in _BSS and auth is not None and (
            call.project != self.project_id or auth.project_id not in (None, self.project_id)
        ):
            return Reply(403, drs_error("DRS.M00261", lang))
        reply = self._call(call, decision)
        if decision.drop_after:
            return Reply(0, mode="drop")
        if decision.answer:
            return distort(decision.answer, reply, self.faults.rng, decision.params)
        return reply

    def _authenticate(self, call: _Call) -> AuthOutcome:
        request = call.request
        query = parse_qsl(request.query, keep_blank_values=True)
        auth = self.authenticator.check(request.method, request.path, query, request.headers, request.body or b"")
        call.entry["auth"], call.entry["identity"] = auth.kind, auth.identity
        if not auth.ok:
            self.world.violate("unauthenticated", None, f"{auth.error_code} {auth.error_detail}".strip())
        return auth

    def _early_fault(self, call: _Call, decision: Decision) -> Reply | None:
        """Throttling, a dropped connection or a 5xx: the request is not applied."""
        request_id, lang, route = call.request.request_id, call.lang, call.route or ""
        if decision.throttled_for > 0:
            limit = int(self.faults.profile.faults_for(route).throttle_rate * 60)
            status, body = apigw_error("APIGW.0308", request_id, str(limit), lang)
            return Reply(status, body, {"Retry-After": str(max(1, math.ceil(decision.throttled_for)))})
        if decision.drop_before:
            return Reply(0, mode="drop")
        if decision.error_status is not None and decision.error_status < 500 and "code" in decision.params:
            return Reply(decision.error_status, {"error_code": decision.params["code"],
                                                 "error_msg": decision.params["message"]})
        if decision.error_status is not None:
            return Reply(decision.error_status, _server_error(decision.error_status, request_id, lang))
        return None

    def _call(self, call: _Call, decision: Decision) -> Reply:
        route, lang = call.route or "", call.lang
        stale = decision.answer == "stale"
        try:
            data = parse_json(call.request.body or b"")
            if route == "tokens":
                status, body, token = self.authenticator.issue(data)
                return Reply(status, body, {"X-Subject-Token": token} if token else {})
            if route == "bss-query":
                return Reply(*self.billing.query(data, lang))
            if route == "bss-unsubscribe":
                return Reply(*self.billing.unsubscribe(data, lang))
            if route == "batch-jobs":
                return Reply(*calls.batch_jobs(self.rules, self.world, data, lang))
            read = {"list": calls.list_jobs, "batch-status": calls.batch_status, "batch-detail": calls.batch_detail}
            return Reply(*read[route](self.world, data, lang, stale))
        except BadRequest as exc:
            self.world.violate("bad_request", None, f"{route}: {exc}")
            if route == "tokens":  # IAM answers Keystone-style
                return Reply(400, keystone_error(400, "Bad Request", "The request body is not valid JSON."))
            if route in _BSS:
                code = exc.code if exc.code in BSS_ERRORS else "CBC.0100"
                return Reply(BSS_ERRORS[code][0], {"error_code": code, "error_msg": bss_message(code, lang)})
            return Reply(DRS_ERRORS[exc.code][0], drs_error(exc.code, lang, exc.arg))


def _server_error(status: int, request_id: str, lang: str) -> dict[str, Any]:
    if status == 503:
        return apigw_error("APIGW.0613", request_id, lang=lang)[1]
    if status == 500:
        return drs_error("DRS.M00004", lang)
    return {"error_code": "APIGW.0601", "error_msg": f"Upstream error ({status}).", "request_id": request_id}
