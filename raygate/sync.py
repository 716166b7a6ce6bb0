"""The blocking client: the asyncio client on a private event loop in a daemon thread.

One implementation of retries, failover and probing serves both clients, so they cannot drift apart. The
client is safe to share between threads (calls hop onto its loop); after a fork, the child builds a new loop
and connection pool on its first call (sockets are never shared with the parent).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from raygate.aio import AsyncClient, Response
from raygate.policy import ClientConfig

__all__ = ["Client"]


class _PrivateLoop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="raygate-client", daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


class Client:
    """`with Client(["http://east:8000", "http://west:8000"]) as client: client.post("/linear", json=...)`.

    Same arguments and behaviour as `AsyncClient`; every method blocks until the call ends.
    """

    def __init__(self, endpoints: list[str] | None = None, *, keeper: str | None = None,
                 config: ClientConfig | None = None, headers: dict[str, str] | None = None) -> None:
        self._args = {"endpoints": endpoints, "keeper": keeper, "config": config, "headers": headers}
        AsyncClient(**self._args)  # validate the arguments now, in the caller's thread
        self._lock = threading.Lock()
        self._pid = 0
        self._loop: _PrivateLoop | None = None
        self._client: AsyncClient | None = None

    def _ensure(self) -> tuple[_PrivateLoop, AsyncClient]:
        with self._lock:
            if self._pid != os.getpid() or self._loop is None:
                self._loop = _PrivateLoop()
                self._client = AsyncClient(**self._args)
                self._pid = os.getpid()
                self._loop.run(self._client.start())
            return self._loop, self._client

    def __enter__(self) -> Client:
        self._ensure()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._loop is not None and self._pid == os.getpid():
                try:
                    self._loop.run(self._client.close(), 10)
                finally:
                    self._loop.stop()
            self._loop, self._client, self._pid = None, None, 0

    def request(self, method: str, path: str, **kwargs) -> Response:
        """See `AsyncClient.request`."""
        loop, client = self._ensure()
        return loop.run(client.request(method, path, **kwargs))

    def get(self, path: str, **kwargs) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs) -> Response:
        return self.request("POST", path, json=json, **kwargs)

    def endpoints(self) -> list[dict]:
        loop, client = self._ensure()

        async def snapshot():
            return client.endpoints()

        return loop.run(snapshot(), 5)
