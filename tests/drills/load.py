"""Concurrent load while something happens (a redeploy, a fault): the drills' measurement, also
imported by path by benchmarks/resilience.py.

`run_load(live_url, during)` starts `clients` threads (c8 by default), each with its own
keep-alive `httpx.Client`, posting encounters to `live_url() + path` in a loop: the URL is asked
again before every request, as a client that follows the live server does (after a blue/green
swap: `readmit.ops.deploy.read_state(run_dir).url`). The load starts `before_s` ahead of
`during()`, which runs in the calling thread, and goes on `after_s` after it returns, so the whole
drill is bounded by `during` plus a few seconds. A failure is any answer other than 200 and any
transport error (refused connection, connection closed without an answer, timeout).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

T = TypeVar("T")
MAX_ERRORS_KEPT = 50


@dataclass
class LoadResult(Generic[T]):
    """What the clients saw while `during` ran.

    `ok` / `failed` count requests; `codes` counts HTTP statuses and transport errors (by
    exception class name); `by_url` counts 200s per base URL (which servers answered);
    `errors` describes the first failures, each with its time relative to `during`'s start
    and end; `value` is what `during` returned; `seconds` is the load's wall time.
    """

    ok: int = 0
    failed: int = 0
    codes: Counter[int | str] = field(default_factory=Counter)
    by_url: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    value: T | None = None

    def summary(self) -> dict[str, Any]:
        """JSON-able figures (for a benchmark's record)."""
        return {
            "ok": self.ok,
            "failed": self.failed,
            "codes": {str(k): v for k, v in self.codes.items()},
            "by_url": dict(self.by_url),
            "seconds": round(self.seconds, 2),
            "rps": round((self.ok + self.failed) / self.seconds, 1) if self.seconds else 0.0,
        }


class _Clock:
    """When `during` started and ended (monotonic), to place failures on its timeline."""

    def __init__(self) -> None:
        self.start: float | None = None
        self.end: float | None = None

    def where(self, t: float) -> str:
        if self.start is None or t < self.start:
            return "before"
        if self.end is None or t <= self.end:
            return f"+{t - self.start:.3f}s into it"
        return f"+{t - self.end:.3f}s after it"


def _client_loop(
    live_url: Callable[[], str],
    path: str,
    bodies: Sequence[Mapping[str, Any]],
    offset: int,
    stop: threading.Event,
    result: LoadResult[Any],
    lock: threading.Lock,
    clock: _Clock,
    timeout_s: float,
) -> None:
    cycle = itertools.islice(itertools.cycle(bodies), offset, None)
    with httpx.Client(timeout=timeout_s) as client:
        for body in cycle:
            if stop.is_set():
                return
            url = live_url()
            try:
                code: int | str = client.post(f"{url}{path}", json=body).status_code
            except httpx.HTTPError as exc:
                code = type(exc).__name__
                detail = repr(exc)
            else:
                detail = f"HTTP {code}"
            with lock:
                result.codes[code] += 1
                if code == 200:
                    result.ok += 1
                    result.by_url[url] += 1
                else:
                    result.failed += 1
                    if len(result.errors) < MAX_ERRORS_KEPT:
                        where = clock.where(time.monotonic())
                        result.errors.append(f"{url}{path}: {detail} ({where})")


def run_load(
    live_url: Callable[[], str],
    during: Callable[[], T],
    *,
    bodies: Sequence[Mapping[str, Any]],
    clients: int = 8,
    path: str = "/predict",
    before_s: float = 1.0,
    after_s: float = 3.0,
    timeout_s: float = 10.0,
) -> LoadResult[T]:
    """Post `bodies` (cycled; each client starts elsewhere in them) to the live server from
    `clients` keep-alive clients while `during()` runs; returns what they saw and `during`'s
    value. If `during` raises, the clients are stopped and the error propagates."""
    if not bodies:
        raise ValueError("run_load needs at least one request body")
    result: LoadResult[T] = LoadResult()
    stop, lock, clock = threading.Event(), threading.Lock(), _Clock()
    threads = [
        threading.Thread(
            target=_client_loop,
            args=(live_url, path, bodies, k * len(bodies) // clients, stop, result, lock, clock),
            kwargs={"timeout_s": timeout_s},
            name=f"load-client-{k}",
            daemon=True,
        )
        for k in range(clients)
    ]
    t0 = time.monotonic()
    for thread in threads:
        thread.start()
    try:
        time.sleep(before_s)
        clock.start = time.monotonic()
        result.value = during()
        clock.end = time.monotonic()
        time.sleep(after_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=timeout_s + 5)
        result.seconds = time.monotonic() - t0
    return result
