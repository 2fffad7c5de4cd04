"""The Simulator: one world, its gateway (auth, faults, BSS) and a real HTTP server, with in-process inspection."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from orchestrator.clock import Clock, RealClock

from .batch_rules import BatchRules
from .billing import Billing
from .credentials import Authenticator, IamDirectory
from .faults import FaultInjector
from .gateway import Gateway
from .inspection import inspect
from .jobs import JobSpec
from .ledger import Ledger
from .machine import StatusMachine
from .profiles import Profile, checked_changes, load_profile
from .seeding import seed_world
from .server import SimulatorServer
from .state import WorldState
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
        iam: IamDirectory | None = None,
    ) -> None:
        self.project_id = project_id
        self.seed = seed
        self.region = region
        self.clock: Clock = clock or RealClock()
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile or "calm")
        self.ledger = Ledger()
        self.state = WorldState(self.clock, self.profile, seed, self.ledger, region, project_id)
        self.machine = StatusMachine(self.state)
        self.world = World(self.state, self.machine)
        self.rules = BatchRules(self.state, self.machine)
        self.billing = Billing(self.state, self.machine)
        ttl = self.profile.token_ttl_seconds if token_ttl_seconds is None else token_ttl_seconds
        iam_users = set(iam_users)
        self._credentials: dict[str, Any] = {"aksk": dict(aksk or {}), "iam_users": iam_users,
                                             "security_tokens": dict(security_tokens or {})}
        self.authenticator = Authenticator(self.clock, project_id, tokens=tokens, token_ttl_seconds=ttl,
                                           region=region, directory=iam, aksk=aksk,
                                           security_tokens=security_tokens, iam_users=iam_users)
        self.faults = FaultInjector(self.clock, self.profile, seed)
        self.gateway = Gateway(project_id=project_id, world=self.world, rules=self.rules, billing=self.billing,
                               authenticator=self.authenticator, faults=self.faults, ledger=self.ledger,
                               inspect=lambda method, path, body: inspect(self, method, path, body))
        self._server: SimulatorServer | None = None
        self._thread: threading.Thread | None = None
        self.url: str | None = None
        self.seeded_ids = seed_world(self.world, jobs, random.Random(f"world-{seed}"), job_status)

    @property
    def iam(self) -> IamDirectory:
        """The IAM this simulator's gateway trusts (shared by siblings)."""
        return self.authenticator.directory

    def sibling(self, project_id: str, region: str, **kw: Any) -> Simulator:
        """Another region of the same account: its own project and world, the same IAM, users and AK/SK."""
        kw.setdefault("profile", self.profile)
        kw.setdefault("clock", self.clock)
        kw.setdefault("seed", self.seed + 1)
        for key, value in self._credentials.items():
            kw.setdefault(key, value)
        return Simulator(project_id=project_id, region=region, iam=self.iam, **kw)

    # -- the world ----------------------------------------------------------------------------------------

    def add_job(self, spec: JobSpec) -> str:
        """Add one task (children follow the spec); returns its id."""
        return self.world.add(spec)

    def add_jobs(self, n: int, spec: JobSpec) -> list[str]:
        """Add n tasks from one spec (names get a numeric suffix when the spec names them)."""
        return [self.world.add(replace(spec, name=f"{spec.name}-{i:05d}") if spec.name else spec)
                for i in range(n)]

    @property
    def jobs(self) -> dict[str, dict[str, Any]]:
        """Snapshot: id -> detail-like dict (plus kind, child_ids, order_active, resource_id) of every task."""
        return self.world.snapshot()

    def status_of(self, job_id: str) -> str | None:
        """The task's status now, None once purged or if it never existed."""
        with self.state.lock:
            self.machine.settle()
            job = self.world.get(job_id)
            return job.status if job else None

    def unsubscribe(self, job_id: str) -> str:
        """An operator unsubscribes a yearly/monthly order in the console: returns the task's status after it."""
        return self.billing.operator_unsubscribe(job_id)

    def expire_tokens(self) -> None:
        """Every token issued or accepted so far expires now (APIGW.0307 afterwards)."""
        self.authenticator.expire_all()

    # -- knobs --------------------------------------------------------------------------------------------

    def set_fault(self, route: str, fault: str, times: int | None = 1, **params: Any) -> None:
        """The next `times` requests of an API get a fault (times=None: all, until clear_faults).

        route: list, batch-status, batch-detail, batch-jobs, tokens, bss-query, bss-unsubscribe.
        fault: drop_before, drop_after, error_5xx (status=503), error_4xx (status=400, code, message: the call
        refused as a whole, as BSS or DRS gives it), latency (ms=1000), and on the read APIs
        not_json, truncated, short_read, results_null, array, unknown_status, missing_ids, stale,
        trickle (byte_ms=50), freeze (seconds=0: until the client leaves), huge (mib=32).
        """
        self.faults.set(route, fault, times, **params)

    def clear_faults(self, route: str | None = None) -> None:
        self.faults.clear(route)

    def knobs(self) -> list[dict[str, Any]]:
        return self.faults.knobs()

    def drift(self, job_id: str, change: str, after_reads: int = 0) -> None:
        """A change nobody asked for: restart, deletable, gain_order, purge (someone else deleted it); now, or
        after the task is served in `after_reads` more read answers (between a plan's reading and the action)."""
        with self.state.lock:
            self.machine.settle()
            self.machine.script(job_id, change, after_reads)

    def refuse_unsubscribe(self, job_id: str, code: str = "CBC.30000054", message: str = "", times: int = 1) -> None:
        """BSS refuses the next `times` unsubscribes of this task's resource (in fail_resource_infos)."""
        self.billing.refuse(job_id, code, message, times)

    def configure(self, **changes: Any) -> None:
        """Change profile keys at run time (e.g. children_top_level=True, unknown_id_results="failing")."""
        profile = replace(self.profile, **checked_changes(changes))
        self.profile = self.state.profile = self.faults.profile = profile

    # -- inspection ---------------------------------------------------------------------------------------

    def log(self, name: str) -> Any:
        """A copy of one ledger counter or log (violations, requests, languages, bss_calls, ...)."""
        return self.ledger.snapshot(name)

    @property
    def violations(self) -> Counter[str]:
        """Rule name -> count of times the client broke it (empty: the client behaved)."""
        return self.ledger.snapshot("violations")  # type: ignore[no-any-return]

    @property
    def violation_log(self) -> list[dict[str, Any]]:
        """One line per violation: rule, job_id, detail, at."""
        return self.ledger.snapshot("violation_log")  # type: ignore[no-any-return]

    @property
    def destructive_calls(self) -> list[dict[str, Any]]:
        """Every batch-jobs item received: job_id, delete_type, result, error_code, status_before, at."""
        return self.ledger.snapshot("destructive_calls")  # type: ignore[no-any-return]

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every API request: method, path, route, status, request_id, auth, identity, fault, language, ..."""
        return self.ledger.snapshot("requests")  # type: ignore[no-any-return]

    @property
    def languages(self) -> Counter[str]:
        """X-Language value (lower-cased; "" when absent) -> number of API requests that carried it."""
        return self.ledger.snapshot("languages")  # type: ignore[no-any-return]

    @property
    def bss_calls(self) -> list[dict[str, Any]]:
        """Every BSS call: call (query|unsubscribe), order_ids, resource_ids, refused, at."""
        return self.ledger.snapshot("bss_calls")  # type: ignore[no-any-return]

    def bss_counts(self) -> dict[str, dict[str, int]]:
        """order id -> {"query": n, "unsubscribe": m}."""
        return self.ledger.bss_counts()

    @property
    def faults_served(self) -> Counter[str]:
        """"route:fault" -> how many answers got it (knobs and profile rates alike)."""
        return self.ledger.snapshot("faults_served")  # type: ignore[no-any-return]

    @property
    def drift_refusals(self) -> list[dict[str, Any]]:
        """Refusals caused by drift the client could not have seen yet (not counted as violations)."""
        return self.ledger.snapshot("drift_refusals")  # type: ignore[no-any-return]

    def counters(self) -> dict[str, Any]:
        """Every count in one document (GET /_sim/counters)."""
        return {
            "violations": dict(self.violations),
            "destructive_calls": len(self.destructive_calls),
            "requests": len(self.requests),
            "languages": dict(self.languages),
            "bss_calls": self.bss_counts(),
            "faults_served": dict(self.faults_served),
            "drift_refusals": len(self.drift_refusals),
        }

    def record_request(self, entry: dict[str, Any]) -> None:
        self.ledger.request(entry)

    def reset_counters(self) -> None:
        """Forget violations, requests, destructive and BSS calls, languages (the world itself is kept)."""
        self.ledger.reset()

    # -- serving ------------------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start serving in a daemon thread; returns the base URL (http://host:port)."""
        if self._server is not None:
            raise RuntimeError("the simulator is already serving")
        self._server = SimulatorServer((host, port), self.gateway.handle)
        bound_host, bound_port = str(self._server.server_address[0]), int(self._server.server_address[1])
        # A short poll interval makes stop() prompt (tests start and stop many servers).
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="drs-simulator", daemon=True)
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
