"""The Simulator: one world, its gateway (auth, faults) and a real HTTP server, with in-process inspection."""

from __future__ import annotations

import json
import random
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .auth import Authenticator
from .clock import Clock, SystemClock
from .faults import FaultInjector
from .jobs import JobSpec
from .profiles import Profile, load_profile
from .seeding import seed_world
from .server import SimulatorServer
from .world import World

DEFAULT_PROJECT_ID = "0123456789abcdef0123456789abcdef"


class Simulator:
    """A strict stand-in for DRS v3 (reference/drs-api.md): seed a world, serve it over HTTP, inspect it."""

    def __init__(
        self,
        project_id: str = DEFAULT_PROJECT_ID,
        seed: int = 0,
        jobs: int = 0,
        profile: Profile | str | Path | None = None,
        tokens: Iterable[str] = (),
        aksk: Mapping[str, str] | None = None,
        iam_users: Iterable[tuple[str, str, str]] = (),
        clock: Clock | None = None,
        *,
        job_status: str | None = None,
        security_tokens: Mapping[str, str] | None = None,
        token_ttl_seconds: float | None = None,
        region: str = "cn-north-4",
    ) -> None:
        self.project_id = project_id
        self.seed = seed
        self.region = region
        self.clock: Clock = clock or SystemClock()
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile or "calm")
        self.world = World(self.clock, self.profile, seed)
        ttl = self.profile.token_ttl_seconds if token_ttl_seconds is None else token_ttl_seconds
        self.authenticator = Authenticator(
            self.clock,
            project_id,
            tokens=tokens,
            aksk=aksk,
            security_tokens=security_tokens,
            iam_users=iam_users,
            token_ttl_seconds=ttl,
            region=region,
        )
        self.faults = FaultInjector(self.clock, self.profile, seed)
        self._log_lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None
        self.seeded_ids = seed_world(self.world, jobs, random.Random(f"world-{seed}"), job_status)

    # -- the world ----------------------------------------------------------------------------------------

    def add_job(self, spec: JobSpec) -> str:
        """Add one task (children follow the spec); returns its id."""
        return self.world.add(spec)

    def add_jobs(self, n: int, spec: JobSpec) -> list[str]:
        """Add n tasks from one spec (names get a numeric suffix when the spec names them)."""
        ids = []
        for i in range(n):
            named = JobSpec(**{**spec.__dict__, "name": f"{spec.name}-{i:05d}"}) if spec.name else spec
            ids.append(self.world.add(named))
        return ids

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        """Snapshot: id -> detail-like dict (plus kind, child_ids, order_active) of every readable task."""
        return self.world.snapshot()

    def status_of(self, job_id: str) -> str | None:
        """The task's status now, None once purged or if it never existed."""
        with self.world.lock:
            self.world.settle()
            job = self.world.get(job_id)
            return job.status if job else None

    def unsubscribe(self, job_id: str) -> str:
        """The operator unsubscribes a yearly/monthly order (BSS): returns the task's status after it."""
        return self.world.unsubscribe(job_id)

    def expire_tokens(self) -> None:
        """Every token issued or accepted so far expires now (APIGW.0307 afterwards)."""
        self.authenticator.expire_all()

    # -- inspection ---------------------------------------------------------------------------------------

    @property
    def violations(self) -> Counter[str]:
        """Rule name -> count of times the client broke it (empty: the client behaved)."""
        with self.world.lock:
            return Counter(self.world.violations)

    @property
    def violation_log(self) -> list[dict[str, Any]]:
        """One line per violation: rule, job_id, detail, at."""
        with self.world.lock:
            return list(self.world.violation_log)

    @property
    def destructive_calls(self) -> list[dict[str, Any]]:
        """Every batch-jobs item received: job_id, delete_type, result, error_code, status_before, at."""
        with self.world.lock:
            return [dict(c) for c in self.world.destructive_calls]

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every API request: method, path, route, status, request_id, auth, identity, duration_ms, ..."""
        with self._log_lock:
            return [dict(r) for r in self._requests]

    def record_request(self, entry: dict[str, Any]) -> None:
        with self._log_lock:
            self._requests.append(entry)

    def reset_counters(self) -> None:
        """Forget violations, requests and destructive calls (the world itself is kept)."""
        with self.world.lock:
            self.world.violations.clear()
            self.world.violation_log.clear()
            self.world.destructive_calls.clear()
        with self._log_lock:
            self._requests.clear()

    def inspect(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """The /_sim/ endpoints (no auth): the same views as the in-process API."""
        views: dict[str, Callable[[], dict[str, Any]]] = {
            "/_sim/jobs": lambda: {"jobs": self.jobs},
            "/_sim/violations": lambda: {"violations": dict(self.violations), "log": self.violation_log},
            "/_sim/requests": lambda: {"requests": self.requests},
            "/_sim/destructive-calls": lambda: {"destructive_calls": self.destructive_calls},
        }
        if method == "GET" and path in views:
            return 200, views[path]()
        if method == "POST" and path == "/_sim/expire-tokens":
            self.expire_tokens()
            return 200, {"expired": True}
        if method == "POST" and path == "/_sim/reset-counters":
            self.reset_counters()
            return 200, {"reset": True}
        if method == "POST" and path.startswith("/_sim/unsubscribe/"):
            job_id = path.removeprefix("/_sim/unsubscribe/")
            try:
                return 200, {"id": job_id, "status": self.unsubscribe(job_id)}
            except KeyError:
                return 404, {"error": f"no such task {job_id}"}
            except ValueError as exc:
                return 409, {"error": str(exc)}
        if method == "POST" and path == "/_sim/jobs":
            try:
                spec = JobSpec(**json.loads(body or b"{}"))
                return 201, {"id": self.add_job(spec)}
            except (TypeError, ValueError) as exc:
                return 400, {"error": str(exc)}
        return 404, {"error": f"no inspection endpoint {method} {path}"}

    # -- serving ------------------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving in a daemon thread; returns the base URL (http://host:port)."""
        if self._server is not None:
            raise RuntimeError("the simulator is already serving")
        self._server = SimulatorServer((host, port), self)
        bound_host, bound_port = str(self._server.server_address[0]), int(self._server.server_address[1])
        # A short poll interval makes stop() prompt (tests start and stop many servers).
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="drs-simulator",
            daemon=True,
        )
        self._thread.start()
        self.url = f"http://{bound_host}:{bound_port}"
        return self.url

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        self.url = None

    @contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve for the duration of a with-block, yielding the base URL."""
        url = self.start(host, port)
        try:
            yield url
        finally:
            self.stop()
