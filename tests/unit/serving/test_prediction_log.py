"""The shipping prediction log: rows queued off the request path, shipped as atomic chunk files
to the store, kept (and retried) while the store refuses them, and read back by monitoring."""

from __future__ import annotations

import gzip
import time
from pathlib import Path
from typing import Any

import bentoml
import pytest
from bentoml._internal.monitoring import api as monitor_api

from readmit import storage
from readmit.monitoring import served
from readmit.serving import prediction_log


@pytest.fixture
def make_monitor(tmp_path: Path) -> Any:
    """Factory of registered ShippingMonitors writing below tmp_path; closed after the test."""
    made: list[str] = []

    def make(**options: Any) -> tuple[str, prediction_log.ShippingMonitor, str]:
        name = f"preds_{len(made)}_{tmp_path.name}"
        log_uri = str(tmp_path / "logs" / name)
        monitor = prediction_log.ShippingMonitor(name, log_uri, pod="pod-a", **options)
        monitor_api._MONITOR_INSTANCES[name] = monitor
        made.append(name)
        return name, monitor, log_uri

    yield make
    for name in made:
        monitor_api._MONITOR_INSTANCES.pop(name).close()


def _log(name: str, rows: list[dict[str, Any]]) -> None:
    with bentoml.monitor(name) as mon:
        mon.log_batch([r["age"] for r in rows], "age", "feature", "categorical")
        mon.log_batch([r["p"] for r in rows], "probability", "prediction", "numerical")
        mon.log_batch(["m:v1"] * len(rows), "model_tag", "prediction", "categorical")


def _rows(log_uri: str) -> list[dict[str, Any]]:
    chunks = served.list_chunks(log_uri)
    return [
        row
        for chunk in chunks
        for row in prediction_log.decode_chunk(storage.read_bytes(chunk.url))
    ]


def _eventually(log_uri: str, rows: int, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while len(found := _rows(log_uri)) < rows and time.monotonic() < deadline:
        time.sleep(0.05)
    return found


def test_rows_are_queued_then_shipped_as_one_chunk(make_monitor: Any) -> None:
    name, monitor, log_uri = make_monitor(flush_seconds=30)
    _log(name, [{"age": "[70-80)", "p": 0.25}, {"age": None, "p": 0.5}])
    _log(name, [{"age": "[10-20)", "p": 0.75}])
    assert _rows(log_uri) == []  # queued, not on the request's path
    assert monitor.flush() == 3
    chunks = served.list_chunks(log_uri)
    assert len(chunks) == 1 and "-pod-a-w0-p" in chunks[0].name
    rows = _rows(log_uri)
    assert [(r["age"], r["probability"]) for r in rows] == [
        ("[70-80)", 0.25),
        (None, 0.5),
        ("[10-20)", 0.75),
    ]
    assert rows[0]["timestamp"].endswith("+00:00")  # UTC
    assert monitor.flush() == 0 and len(served.list_chunks(log_uri)) == 1


def test_each_flush_is_a_new_chunk_in_time_order(make_monitor: Any) -> None:
    name, monitor, log_uri = make_monitor(flush_seconds=30)
    for i in range(3):
        _log(name, [{"age": "[50-60)", "p": i / 10}])
        monitor.flush()
    chunks = served.list_chunks(log_uri)
    assert len(chunks) == 3
    assert [c.first_row_at for c in chunks] == sorted(c.first_row_at for c in chunks)
    assert [r["probability"] for r in _rows(log_uri)] == [0.0, 0.1, 0.2]
    assert [c.name for c in served.list_chunks(log_uri, after=chunks[0].name)] == [
        c.name for c in chunks[1:]
    ]


def test_shipping_runs_in_the_background(make_monitor: Any) -> None:
    name, _, log_uri = make_monitor(flush_seconds=0.05)
    _log(name, [{"age": "[50-60)", "p": 0.1}])
    assert [r["age"] for r in _eventually(log_uri, rows=1)] == ["[50-60)"]


def test_close_ships_what_is_left(make_monitor: Any) -> None:
    name, monitor, log_uri = make_monitor(flush_seconds=30)
    _log(name, [{"age": "[90-100)", "p": 0.9}])
    monitor.close()
    assert [r["age"] for r in _rows(log_uri)] == ["[90-100)"]


def test_many_waiting_rows_ship_early(make_monitor: Any) -> None:
    name, _, log_uri = make_monitor(flush_seconds=60, max_pending_rows=10)
    _log(name, [{"age": "[40-50)", "p": i / 20} for i in range(12)])
    assert len(_eventually(log_uri, rows=12)) == 12


def test_close_all_ships_every_open_monitor(make_monitor: Any) -> None:
    name, _, log_uri = make_monitor(flush_seconds=30)
    _log(name, [{"age": "[60-70)", "p": 0.3}])
    assert prediction_log.close_all() >= 1
    assert [r["age"] for r in _rows(log_uri)] == ["[60-70)"]


def test_a_refusing_store_keeps_rows_queued_then_ships_them(
    make_monitor: Any, tmp_path: Path
) -> None:
    """The store refuses chunks (here: the log folder's parent is a file): rows stay queued, in
    order, and ship once the store takes them again; nothing is lost below the limit."""
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    name, monitor, _ = make_monitor(flush_seconds=30)
    monitor.store_uri = str(blocked / "logs")
    _log(name, [{"age": "[20-30)", "p": 0.2}])
    with pytest.raises(OSError):
        monitor.flush()
    _log(name, [{"age": "[30-40)", "p": 0.3}])
    with pytest.raises(OSError):
        monitor.flush()
    assert monitor.rows_lost == 0
    monitor.store_uri = str(tmp_path / "recovered")
    assert monitor.flush() == 2
    assert [r["age"] for r in _rows(str(tmp_path / "recovered"))] == ["[20-30)", "[30-40)"]


def test_beyond_the_queue_limit_the_oldest_rows_are_dropped_and_counted(
    make_monitor: Any, tmp_path: Path
) -> None:
    blocked = tmp_path / "blocked"
    blocked.write_text("not a folder")
    lost: list[int] = []
    prediction_log.add_loss_listener(lost.append)
    try:
        name, monitor, _ = make_monitor(flush_seconds=30, max_queued_rows=3)
        monitor.store_uri = str(blocked / "logs")
        for i in range(3):
            _log(name, [{"age": "[20-30)", "p": i / 10}, {"age": "[20-30)", "p": i / 10}])
            with pytest.raises(OSError):
                monitor.flush()
        assert monitor.rows_lost == 4 and sum(lost) == 4
        monitor.store_uri = str(tmp_path / "recovered")
        assert monitor.flush() == 2  # the newest record survived
        assert [r["probability"] for r in _rows(str(tmp_path / "recovered"))] == [0.2, 0.2]
    finally:
        prediction_log._LOSS_LISTENERS.remove(lost.append)


def test_rows_logged_in_one_call_ship_like_columns(
    make_monitor: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """`log_rows` (the service's path: one call per request, inside or outside a
    `bentoml.monitor` block) queues the same rows as the column API, stamped, in order."""
    name, monitor, log_uri = make_monitor(flush_seconds=30)
    _log(name, [{"age": "[70-80)", "p": 0.25}])
    with bentoml.monitor(name) as mon:
        mon.log_rows([{"age": "[10-20)", "probability": 0.5, "model_tag": "m:v1"}])
    with bentoml.monitor(name) as mon:  # a second block in the same context still works
        mon.log_rows([{"age": None, "probability": 0.75, "model_tag": "m:v1"}])
    monitor.log_rows([{"age": "[20-30)", "probability": 0.1, "model_tag": "m:v1"}])
    _log(name, [{"age": "[30-40)", "p": 0.2}])
    assert "No data logged" not in caplog.text
    assert monitor.flush() == 5
    rows = _rows(log_uri)
    assert [(r["age"], r["probability"]) for r in rows] == [
        ("[70-80)", 0.25), ("[10-20)", 0.5), (None, 0.75), ("[20-30)", 0.1), ("[30-40)", 0.2),
    ]  # fmt: skip
    assert [list(r) for r in rows] == [["age", "probability", "model_tag", "timestamp"]] * 5
    assert rows == sorted(rows, key=lambda r: r["timestamp"])


def test_chunks_round_trip_and_bad_ones_are_refused() -> None:
    rows = [{"a": 1, "b": None}, {"a": 2, "b": "x"}]
    blob = prediction_log.encode_chunk(rows)
    assert prediction_log.decode_chunk(blob) == rows
    with pytest.raises(ValueError, match="gzip"):
        prediction_log.decode_chunk(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        prediction_log.decode_chunk(gzip.compress(b'{"a": 1}\n{"a": \n'))
    with pytest.raises(ValueError, match="not a JSON object"):
        prediction_log.decode_chunk(gzip.compress(b"[1, 2]\n"))


def _monitor_the_service_gets(config: dict[str, Any], name: str) -> Any:
    """What `bentoml.monitor(name)` hands the service with this `monitoring=` config: the config
    injected as `bentoml serve` does in each worker (`Service.inject_config`), one request's
    columns logged. BentoML's global config is restored afterwards."""
    import copy

    from bentoml._internal.configuration.containers import BentoMLContainer

    from readmit.serving import example_encounter, log_columns

    @bentoml.service(name=f"probe-{name.replace('_', '-')}", monitoring=config)
    class Probe:
        pass

    saved = copy.deepcopy(BentoMLContainer.config.get())
    try:
        Probe.inject_config()  # type: ignore[attr-defined]
        with bentoml.monitor(name) as mon:
            for column, role, kind, values in log_columns(
                [example_encounter()], [0.3], ["high"], "m:v1"
            ):
                mon.log_batch(values, column, role, kind)
        return monitor_api._MONITOR_INSTANCES.pop(name)
    finally:
        BentoMLContainer.config.set(saved)


def test_the_setting_turns_the_prediction_log_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """READMIT_PREDICTION_LOG_ENABLED=false: BentoML's monitoring is disabled, the request's
    logging is a no-op, and nothing is queued or written (neither our chunks nor BentoML's
    default ./monitoring folder). With the default the same probe ships a chunk."""
    from bentoml._internal.monitoring.base import NoOpMonitor

    from readmit.serving import monitoring_config
    from readmit.settings import get_settings

    monkeypatch.chdir(tmp_path)  # BentoML's default backend would write ./monitoring here
    monkeypatch.setenv("READMIT_PREDICTION_LOG_URI", str(tmp_path / "plogs"))
    monkeypatch.setenv("READMIT_PREDICTION_LOG_ENABLED", "false")
    get_settings.cache_clear()
    try:
        off = get_settings()
        monkeypatch.delenv("READMIT_PREDICTION_LOG_ENABLED")
        get_settings.cache_clear()
        on = get_settings()
    finally:
        get_settings.cache_clear()
    assert off.prediction_log_enabled is False and on.prediction_log_enabled is True
    assert monitoring_config(off) == {"enabled": False}

    monitor = _monitor_the_service_gets(monitoring_config(off), f"off_{tmp_path.name}")
    assert type(monitor) is NoOpMonitor
    assert monitor not in prediction_log.open_monitors()
    assert list(tmp_path.rglob("*")) == []

    shipping = _monitor_the_service_gets(monitoring_config(on), f"on_{tmp_path.name}")
    assert isinstance(shipping, prediction_log.ShippingMonitor)
    shipping.close()
    assert len(_rows(str(tmp_path / "plogs"))) == 1
