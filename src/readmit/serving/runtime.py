"""Process-level tuning of the BentoML worker that serves the model: measured, not folklore.

Two findings of `benchmarks/serving.py`, both about tail latency under load:

1. BentoML 1.4's `TimeoutMiddleware` schedules `loop.call_later(timeout, ...)` for every request
   and never cancels it. Each pending timer keeps the request's context (its OpenTelemetry span,
   futures, about 20 objects) alive for the whole `traffic.timeout` (60 s). At 1,000 req/s that
   is over a million live objects, and every full garbage collection walks them: pauses of
   70-140 ms, a p99 of ~100-400 ms at concurrency 8 even for an endpoint that does nothing.
   `CancellingTimeoutMiddleware` is the same middleware (same 504 after the timeout) that
   cancels its timer when the request ends; `install_timeout_fix` puts it where BentoML's app
   factory looks it up. Checked against bentoml 1.4.39 (pinned); a test in
   `tests/unit/test_serving_runtime.py` fails once upstream stops leaking, so the fix can go.
2. The model, pandas, scikit-learn and XGBoost leave ~100k long-lived objects that every full
   collection would scan again; `settle_heap` moves them to the permanent generation once the
   model is loaded (`gc.freeze`).
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse

Scope = dict[str, Any]
UpstreamTimeoutMiddleware = traffic.TimeoutMiddleware
"""BentoML's own class, kept before `install_timeout_fix` replaces the module attribute."""


class CancellingTimeoutMiddleware(UpstreamTimeoutMiddleware):
    """BentoML's request timeout (504 after `timeout` seconds) without the leaked timer."""

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:  # type: ignore[override]
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

        async def send_and_release(message: Any) -> None:
            if not waiter.done():
                waiter.set_result(None)
            await send(message)

        handler = asyncio.ensure_future(self.app(scope, receive, send_and_release))
        try:
            await waiter
        except TimeoutError:
            if handler.cancel():
                body = {"error": f"Not able to process the request in {self.timeout} seconds"}
                await JSONResponse(body, status_code=504)(scope, receive, send)
        else:
            await handler
        finally:
            timer.cancel()


def install_timeout_fix() -> None:
    """Make BentoML's app factory build `CancellingTimeoutMiddleware` (before the app is built)."""
    traffic.TimeoutMiddleware = CancellingTimeoutMiddleware  # type: ignore[misc]


def settle_heap() -> int:
    """Collect, then freeze what survives (loaded model, libraries); returns the frozen count."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
