"""The HTTP front: routing, gateway checks (auth, throttling, faults), the DRS calls, the /_sim/ endpoints."""

from __future__ import annotations

import json
import math
import re
import socket
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from . import api
from .bodies import BadRequest, parse_json
from .messages import DRS_ERRORS, UNSUPPORTED_MEDIA_MSG, apigw_error, drs_error, language
from .world import World

if TYPE_CHECKING:
    from .core import Simulator

MAX_BODY = 12 * 1024 * 1024  # APIG refuses bodies over 12 MB
_PROJECT_ROUTE = re.compile(
    r"^/v3/(?P<project>[^/]+)/jobs(?P<rest>(/batch-status|/batch-detail|/batch-jobs)?)$"
)
_ROUTES: dict[tuple[str, str], str] = {
    ("POST", ""): "list",
    ("POST", "/batch-status"): "batch-status",
    ("POST", "/batch-detail"): "batch-detail",
    ("DELETE", "/batch-jobs"): "batch-jobs",
}
_CALLS: dict[str, Callable[[World, dict[str, Any], str], api.Reply]] = {
    "list": api.list_jobs,
    "batch-status": api.batch_status,
    "batch-detail": api.batch_detail,
    "batch-jobs": api.batch_jobs,
}


def match_route(method: str, path: str) -> tuple[str | None, str | None]:
    """(API name, path project id) for a request, or (None, None) when no API is published there."""
    if method == "POST" and path == "/v3/auth/tokens":
        return "tokens", None
    m = _PROJECT_ROUTE.match(path)
    if m is None:
        return None, None
    return _ROUTES.get((method, m.group("rest"))), m.group("project")


class _Dropped(Exception):
    """Close the connection without answering."""


class SimulatorServer(ThreadingHTTPServer):
    """A threaded HTTP server that knows its simulator."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        super().__init__(address, Handler)


class Handler(BaseHTTPRequestHandler):
    """One request: gateway checks, then the DRS call (or a /_sim/ inspection)."""

    protocol_version = "HTTP/1.1"  # keep-alive, as clients expect from the real gateway
    server: SimulatorServer

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without NODELAY, Nagle plus delayed ACKs add ~40 ms a call.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: every request is recorded in Simulator.requests instead."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # -- plumbing -----------------------------------------------------------------------------------------

    def _read_body(self) -> bytes | None:
        """The raw body bytes (what a signature covers), None when larger than the gateway allows."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            size = 0
            while True:
                length = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if length == 0:
                    self.rfile.readline()
                    break
                size += length
                if size > MAX_BODY:
                    return None
                chunks.append(self.rfile.read(length))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            return None
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: dict[str, Any] | None, request_id: str, extra: dict[str, str] | None = None
    ) -> None:
        payload = json.dumps(body, ensure_ascii=False).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Request-Id", request_id)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)

    def _drop(self) -> None:
        """Close without a byte of response: the client sees the connection reset or closed."""
        self.close_connection = True

    # -- the request --------------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        sim = self.server.simulator
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        raw_path, _, raw_query = self.path.partition("?")
        entry: dict[str, Any] = {
            "method": method,
            "path": raw_path,
            "route": None,
            "status": None,
            "request_id": request_id,
            "auth": "none",
            "identity": "",
            "error_code": None,
            "dropped": False,
            "at": sim.clock.now().isoformat(),
        }
        body = self._read_body()
        if raw_path.startswith("/_sim/"):
            status, reply = sim.inspect(method, raw_path, body or b"")
            self._send(status, reply, request_id)
            return
        extra: dict[str, str] = {}
        try:
            if body is None:
                self.close_connection = True
                status, reply = apigw_error("APIGW.0201", request_id)
            else:
                status, reply, extra = self._gateway(method, raw_path, raw_query, body, request_id, entry)
        except _Dropped:
            entry["dropped"] = True
            self._finish(entry, started)
            self._drop()
            return
        entry["status"] = status
        entry["error_code"] = reply.get("error_code")
        # Recorded before the answer goes out, so a client that got its response also finds it in the log.
        self._finish(entry, started)
        self._send(status, reply, request_id, extra)

    def _finish(self, entry: dict[str, Any], started: float) -> None:
        entry["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.server.simulator.record_request(entry)

    def _gateway(
        self, method: str, raw_path: str, raw_query: str, body: bytes, request_id: str, entry: dict[str, Any]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """APIG then DRS: route, authenticate, throttle, inject faults, validate, call."""
        sim = self.server.simulator
        headers = {k.lower(): v for k, v in self.headers.items()}
        lang = language(headers.get("x-language"))
        route, project = match_route(method, raw_path)
        entry["route"] = route
        if route is None:
            status, reply = apigw_error("APIGW.0101", request_id)
            return status, reply, {}
        auth = None
        if route != "tokens":
            query = parse_qsl(raw_query, keep_blank_values=True)
            auth = sim.authenticator.check(method, raw_path, query, headers, body)
            entry["auth"], entry["identity"] = auth.kind, auth.identity
            if not auth.ok:
                sim.world.violate("unauthenticated", None, f"{auth.error_code} {auth.error_detail}".strip())
                status, reply = apigw_error(auth.error_code or "APIGW.0301", request_id, auth.error_detail)
                return status, reply, {}
        decision = sim.faults.decide(route)
        if decision.latency > 0:
            time.sleep(decision.latency)
        if decision.throttled_for > 0:
            limit = int(sim.profile.faults_for(route).throttle_rate * 60)
            status, reply = apigw_error("APIGW.0308", request_id, str(limit))
            return status, reply, {"Retry-After": str(max(1, math.ceil(decision.throttled_for)))}
        if decision.drop_before:
            raise _Dropped
        if decision.error_status is not None:
            return decision.error_status, _server_error(decision.error_status, request_id, lang), {}
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json":
            return 415, {"error_code": "DRS.M00200", "error_msg": UNSUPPORTED_MEDIA_MSG[lang == "zh-cn"]}, {}
        if auth is not None and (project != sim.project_id or auth.project_id not in (None, sim.project_id)):
            return 403, drs_error("DRS.M00261", lang), {}
        try:
            data = parse_json(body)
            if route == "tokens":
                status, reply, token = sim.authenticator.issue(data)
                extra = {"X-Subject-Token": token} if token else {}
            else:
                status, reply = _CALLS[route](sim.world, data, lang)
                extra = {}
        except BadRequest as exc:
            sim.world.violate("bad_request", None, f"{route}: {exc}")
            if route == "tokens":  # IAM answers Keystone-style
                reply = {
                    "error": {
                        "code": 400,
                        "message": "The request body is not valid JSON.",
                        "title": "Bad Request",
                    }
                }
                status, extra = 400, {}
            else:
                status, reply, extra = DRS_ERRORS[exc.code][0], drs_error(exc.code, lang, exc.arg), {}
        if decision.drop_after:
            raise _Dropped
        return status, reply, extra


def _server_error(status: int, request_id: str, lang: str) -> dict[str, Any]:
    if status == 503:
        return apigw_error("APIGW.0613", request_id)[1]
    if status == 500:
        return drs_error("DRS.M00004", lang)
    return {"error_code": "APIGW.0601", "error_msg": f"Upstream error ({status}).", "request_id": request_id}
