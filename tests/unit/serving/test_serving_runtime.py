"""The BentoML worker tuning: the request timeout without a leaked timer, the buffered
prediction log (same files and format as BentoML's default monitor), and the frozen heap."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from pathlib import Path
from typing import Any

import bentoml
import pytest
from bentoml._internal.monitoring import api as monitor_api
from bentoml._internal.server.http import traffic

from readmit.serving import prediction_log, runtime


def _run_request(middleware: Any) -> tuple[list[dict[str, Any]], int]:
    """One HTTP request through `middleware`; returns (messages sent, timers still pending)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def main() -> int:
        await middleware({"type": "http", "path": "/predict"}, receive, send)
        await asyncio.sleep(0)
        scheduled = asyncio.get_running_loop()._scheduled  # type: ignore[attr-defined]
        return sum(not handle.cancelled() for handle in scheduled)

    return sent, asyncio.run(main())


async def _fast_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _slow_app(scope: Any, receive: Any, send: Any) -> None:
    await asyncio.sleep(5)
    await _fast_app(scope, receive, send)


def test_upstream_timeout_middleware_leaks_its_timer() -> None:
    """Why the fix exists: BentoML's own middleware leaves a 60 s timer per request."""
    upstream = runtime.UpstreamTimeoutMiddleware
    sent, pending = _run_request(upstream(_fast_app, timeout=60))
    assert sent[0]["status"] == 200
    assert pending == 1


def test_cancelling_timeout_middleware_releases_the_timer() -> None:
    sent, pending = _run_request(runtime.CancellingTimeoutMiddleware(_fast_app, timeout=60))
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200 and pending == 0


def test_cancelling_timeout_middleware_still_times_out() -> None:
    sent, pending = _run_request(runtime.CancellingTimeoutMiddleware(_slow_app, timeout=0.05))
    assert sent[0]["status"] == 504
    assert b"0.05 seconds" in sent[1]["body"] and pending == 0


def test_install_timeout_fix_is_what_bentoml_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(traffic, "TimeoutMiddleware", traffic.TimeoutMiddleware)
    runtime.install_timeout_fix()
    from bentoml._internal.server.http.traffic import TimeoutMiddleware

    assert TimeoutMiddleware is runtime.CancellingTimeoutMiddleware
    assert issubclass(TimeoutMiddleware, runtime.UpstreamTimeoutMiddleware)


def test_settle_heap_freezes_surviving_objects() -> None:
    try:
        frozen = runtime.settle_heap()
        assert frozen == gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


# ------------------------------------------------------------------ buffered prediction log


@pytest.fixture
def make_monitor(tmp_path: Path) -> Any:
    """Factory of registered BufferedMonitors with given options; closed after the test."""
    made: list[str] = []

    def make(**options: Any) -> tuple[str, prediction_log.BufferedMonitor, Path]:
        name = f"preds_{len(made)}_{tmp_path.name}"
        monitor = prediction_log.BufferedMonitor(name, str(tmp_path), **options)
        monitor_api._MONITOR_INSTANCES[name] = monitor
        made.append(name)
        return name, monitor, tmp_path / name

    yield make
    for name in made:
        monitor_api._MONITOR_INSTANCES.pop(name).close()


def _eventually(folder: Path, rows: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """The log's rows once `rows` are written (the writer thread), or what is there at timeout."""
    deadline = time.monotonic() + timeout_s
    while len(found := _lines(folder)) < rows and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def _log(name: str, rows: list[dict[str, Any]]) -> None:
    with bentoml.monitor(name) as mon:
        mon.log_batch([r["age"] for r in rows], "age", "feature", "categorical")
        mon.log_batch([r["p"] for r in rows], "probability", "prediction", "numerical")


def _lines(folder: Path) -> list[dict[str, Any]]:
    files = sorted((folder / "data").glob("data.*.log*"))
    return [json.loads(ln) for f in files for ln in f.read_text().splitlines() if ln.strip()]


def test_buffered_monitor_queues_then_writes_json_lines(make_monitor: Any) -> None:
    name, monitor, folder = make_monitor(flush_seconds=30)
    _log(name, [{"age": "[70-80)", "p": 0.25}, {"age": None, "p": 0.5}])
    _log(name, [{"age": "[10-20)", "p": 0.75}])
    assert _lines(folder) == []  # queued, not on the request's path
    assert monitor.flush() == 3
    rows = _lines(folder)
    assert [(r["age"], r["probability"]) for r in rows] == [
        ("[70-80)", 0.25),
        (None, 0.5),
        ("[10-20)", 0.75),
    ]
    assert {"timestamp", "request_id", "trace_id"} <= set(rows[0])
    schema = json.loads((folder / "schema" / "schema.0.log").read_text().splitlines()[0])
    assert [c["name"] for c in schema["columns"]] == ["age", "probability"]
    assert monitor.flush() == 0


def test_buffered_monitor_writes_in_the_background(make_monitor: Any) -> None:
    name, _, folder = make_monitor(flush_seconds=0.05)
    _log(name, [{"age": "[50-60)", "p": 0.1}])
    assert [r["age"] for r in _eventually(folder, rows=1)] == ["[50-60)"]


def test_buffered_monitor_close_writes_what_is_left(make_monitor: Any) -> None:
    name, monitor, folder = make_monitor(flush_seconds=30)
    _log(name, [{"age": "[90-100)", "p": 0.9}])
    monitor.close()
    assert [r["age"] for r in _lines(folder)] == ["[90-100)"]


def test_buffered_monitor_flushes_early_when_many_rows_wait(make_monitor: Any) -> None:
    name, _, folder = make_monitor(flush_seconds=60, max_pending_rows=10)
    _log(name, [{"age": "[40-50)", "p": i / 20} for i in range(12)])
    assert len(_eventually(folder, rows=12)) == 12


def test_close_all_writes_every_open_monitor(make_monitor: Any) -> None:
    name, _, folder = make_monitor(flush_seconds=30)
    _log(name, [{"age": "[60-70)", "p": 0.3}])
    assert prediction_log.close_all() >= 1
    assert [r["age"] for r in _lines(folder)] == ["[60-70)"]
