"""The asyncio client: aiohttp connection pool, timeouts, retries with back-off under a budget, endpoint
failover and fail-back (see `policy` for what is retried and `endpoints` for health)."""

from __future__ import annotations

import asyncio
import json as jsonlib
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from multidict import CIMultiDict

from raygate.endpoints import EndpointSet
from raygate.errors import Timeout, Unavailable, error_from_response
from raygate.policy import (
    CONNECT_FAILED,
    IDEMPOTENT_METHODS,
    SEND_FAILED,
    TIMED_OUT,
    ClientConfig,
    Outcome,
    RetryBudget,
    backoff_s,
    may_retry,
)

__all__ = ["AsyncClient", "Response", "read_keeper_endpoints"]

log = structlog.get_logger("raygate.client")


@dataclass(frozen=True)
class Response:
    status: int  # HTTP status (< 400: errors are raised)
    headers: CIMultiDict  # response headers (case-insensitive)
    body: bytes  # raw body
    endpoint: str  # gateway that answered
    attempts: tuple = field(default=())  # (endpoint, outcome) of every attempt, oldest first

    def json(self) -> Any:
        return jsonlib.loads(self.body)

    @property
    def request_id(self) -> str | None:
        return self.headers.get("X-Request-Id")

    @property
    def version(self) -> str | None:
        return self.headers.get("X-Raygate-Version")

    @property
    def replica(self) -> str | None:
        return self.headers.get("X-Raygate-Replica")


def read_keeper_endpoints(doc: Any) -> list[str]:
    """The ordered endpoint list out of what the Keeper serves or writes: `{"endpoints": [...]}`."""
    if not isinstance(doc, dict) or not isinstance(doc.get("endpoints"), list) or not doc["endpoints"]:
        raise ValueError("the Keeper's answer has no non-empty 'endpoints' list")
    return [str(url) for url in doc["endpoints"]]


class AsyncClient:
    """`async with AsyncClient(["http://east:8000", "http://west:8000"]) as client: await client.post(...)`.

    `endpoints`: gateway URLs, preferred first. `keeper`: a Keeper URL (`http://host:port/-/keeper/endpoints`)
    or the path of the JSON file a Keeper writes; the list is read from it at start and every
    `refresh_interval_s` (given both, `endpoints` is used until the Keeper first answers).
    """

    def __init__(self, endpoints: list[str] | None = None, *, keeper: str | None = None,
                 config: ClientConfig | None = None, headers: dict[str, str] | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        if not endpoints and not keeper:
            raise ValueError("give gateway endpoints, a Keeper, or both")
        self.config = config or ClientConfig()
        self.keeper = keeper
        self._endpoints = EndpointSet(list(endpoints), self.config.down_after_errors) if endpoints else None
        self._headers = dict(headers or {})
        self._clock = clock
        self._rng = rng or random.Random()
        self._budget = RetryBudget(self.config.budget_ratio, self.config.budget_min_per_s,
                                   self.config.budget_cap, clock())
        self._session: aiohttp.ClientSession | None = None
        self._maintainer: asyncio.Task | None = None
        self._start_lock = asyncio.Lock()

    # -- lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> None:
        async with self._start_lock:
            if self._session is not None:
                return
            config = self.config
            connector = aiohttp.TCPConnector(limit=config.pool_size, limit_per_host=config.pool_per_endpoint,
                                             enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
            if self.keeper:
                await self._refresh_from_keeper(required=self._endpoints is None)
            self._maintainer = asyncio.get_running_loop().create_task(self._maintain())

    async def close(self) -> None:
        if self._maintainer is not None:
            self._maintainer.cancel()
            try:
                await self._maintainer
            except asyncio.CancelledError:
                pass
            self._maintainer = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def endpoints(self) -> list[dict]:
        """Known endpoints in preference order, with their health."""
        return self._endpoints.snapshot() if self._endpoints else []

    # -- calls ------------------------------------------------------------------------------------
    async def get(self, path: str, **kwargs) -> Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, json: Any = None, **kwargs) -> Response:
        return await self.request("POST", path, json=json, **kwargs)

    async def request(self, method: str, path: str, *, json: Any = None, data: bytes | None = None,
                      headers: dict[str, str] | None = None, idempotent: bool | None = None,
                      split_key: str | None = None, version: str | None = None, request_id: str | None = None,
                      timeout_s: float | None = None, deadline_s: float | None = None) -> Response:
        """Send one call; retry and fail over as `policy` allows. Raises a `GatewayError` for an error
        status, `Unavailable` when no endpoint answered, `Timeout` when the deadline passed."""
        if self._session is None:
            await self.start()
        method = method.upper()
        idempotent = method in IDEMPOTENT_METHODS if idempotent is None else idempotent
        body = jsonlib.dumps(json).encode() if json is not None else data
        request_id = request_id or os.urandom(8).hex()
        sent = {**self._headers, **(headers or {}), "X-Request-Id": request_id}
        if json is not None:
            sent.setdefault("Content-Type", "application/json")
        if split_key is not None:
            sent["X-Raygate-Split-Key"] = split_key
        if version is not None:
            sent["X-Raygate-Version"] = version
        path = path if path.startswith("/") else "/" + path
        now = self._clock()
        deadline = now + (deadline_s if deadline_s is not None else self.config.deadline_s)
        self._budget.on_call(now)
        return await self._send(method, path, body, sent, idempotent, request_id, deadline,
                                timeout_s or self.config.timeout_s)

    async def _send(self, method, path, body, headers, idempotent, request_id, deadline, timeout_s) -> Response:
        attempts: list[tuple[str, str]] = []
        tried: list[str] = []
        while True:
            url = self._choose(tried)
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise Timeout(f"deadline passed after {len(attempts)} attempt(s)", request_id=request_id,
                              attempts=tuple(attempts))
            outcome, answer = await self._attempt(url, method, path, body, headers, min(timeout_s, remaining))
            tried.append(url)
            attempts.append((url, outcome.failure or str(outcome.status)))
            self._record(url, outcome)
            if answer is not None and outcome.ok and answer[0] < 400:
                return Response(answer[0], answer[1], answer[2], url, tuple(attempts))
            error = self._final_error(outcome, answer, url, request_id, attempts)
            now = self._clock()
            if (not may_retry(outcome, idempotent) or len(attempts) >= self.config.max_attempts
                    or now >= deadline or not self._budget.try_spend(now)):
                raise error
            next_url = self._choose(tried)
            delay = backoff_s(self.config, len(attempts), next_url == url, outcome.retry_after, self._rng)
            if delay > 0:
                if now + delay >= deadline:
                    raise error
                await asyncio.sleep(delay)

    def _choose(self, tried: list[str]) -> str:
        candidates = self._endpoints.candidates()
        for url in candidates:
            if url not in tried:
                return url
        return candidates[0]

    async def _attempt(self, url, method, path, body, headers, timeout_s) -> tuple[Outcome, tuple | None]:
        timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, self.config.connect_timeout_s))
        try:
            async with self._session.request(method, url + path, data=body, headers=headers,
                                             timeout=timeout, allow_redirects=False) as response:
                payload = await response.read()
                answer = (response.status, CIMultiDict(response.headers), payload)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            return Outcome(failure=CONNECT_FAILED, code=type(exc).__name__), None
        except (TimeoutError, aiohttp.ServerTimeoutError):
            return Outcome(failure=TIMED_OUT), None
        except (aiohttp.ClientError, OSError) as exc:  # reset, disconnected, payload cut short
            return Outcome(failure=SEND_FAILED, code=type(exc).__name__), None
        status = answer[0]
        code, retry_after = "", None
        if status >= 400:
            error = error_from_response(status, payload, answer[1])
            code, retry_after = error.code, error.retry_after
        return Outcome(status=status, code=code, retry_after=retry_after), answer

    def _final_error(self, outcome: Outcome, answer, url: str, request_id: str, attempts: list):
        if answer is not None:
            return error_from_response(answer[0], answer[2], answer[1], url, tuple(attempts))
        if outcome.failure == TIMED_OUT:
            return Timeout(f"no answer from {url} in time ({len(attempts)} attempt(s))", request_id=request_id,
                           attempts=tuple(attempts))
        return Unavailable(f"could not reach a gateway ({len(attempts)} attempt(s); last: {url}: "
                           f"{outcome.failure} {outcome.code})", request_id=request_id, attempts=tuple(attempts))

    def _record(self, url: str, outcome: Outcome) -> None:
        if not outcome.endpoint_failed:
            self._endpoints.record_success(url)
            return
        reason = outcome.failure or f"http_{outcome.status}"
        if self._endpoints.record_failure(url, self._clock(), reason, outcome.endpoint_down_now):
            log.warning("endpoint_down", endpoint=url, reason=reason)

    # -- health and the Keeper --------------------------------------------------------------------
    async def _maintain(self) -> None:
        """Probe endpoints that are out; re-read the Keeper's list. Never dies."""
        next_refresh = self._clock() + self.config.refresh_interval_s
        while True:
            await asyncio.sleep(self.config.probe_interval_s)
            try:
                if self.keeper and self._clock() >= next_refresh:
                    next_refresh = self._clock() + self.config.refresh_interval_s
                    await self._refresh_from_keeper(required=False)
                down = self._endpoints.down() if self._endpoints else []
                results = await asyncio.gather(*(self.probe(url) for url in down))
                for url, ready in zip(down, results):
                    if ready and self._endpoints.mark_up(url):
                        log.info("endpoint_up", endpoint=url)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001  the maintenance loop never dies
                log.warning("client_maintenance_failed", error=repr(exc))

    async def probe(self, url: str) -> bool:
        """Whether `url` answers GET /-/ready with 200 within probe_timeout_s."""
        try:
            async with self._session.get(url + "/-/ready",
                                         timeout=aiohttp.ClientTimeout(total=self.config.probe_timeout_s)) as r:
                await r.read()
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError, OSError):
            return False

    async def _refresh_from_keeper(self, required: bool) -> None:
        try:
            if self.keeper.startswith(("http://", "https://")):
                async with self._session.get(self.keeper, timeout=aiohttp.ClientTimeout(total=2.0)) as r:
                    r.raise_for_status()
                    urls = read_keeper_endpoints(jsonlib.loads(await r.read()))
            else:
                urls = read_keeper_endpoints(jsonlib.loads(Path(self.keeper).read_bytes()))
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as exc:
            if required:
                raise Unavailable(f"cannot read endpoints from the Keeper at {self.keeper}: {exc}") from None
            log.warning("keeper_unreachable", keeper=self.keeper, error=repr(exc))
            return
        if self._endpoints is None:
            self._endpoints = EndpointSet(urls, self.config.down_after_errors)
        elif tuple(urls) != self._endpoints.urls:
            self._endpoints.replace(urls)
            log.info("endpoints_changed", endpoints=urls)
