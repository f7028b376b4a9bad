"""The prediction log when the store refuses chunks (a full disk: OSError ENOSPC), without a
server: every refused chunk reaches the failure listeners, the rows still waiting reach the
queued-rows listeners after every attempt, nothing is dropped below the queue limit, and all of
it ships, in order, once the store takes chunks again. The service turns these listeners into
`readmit_prediction_log_ship_failures_total` and `readmit_prediction_log_queued_rows`."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from readmit import storage
from readmit.monitoring import served
from readmit.serving import prediction_log


class FullDisk:
    """`storage.write_bytes` that raises ENOSPC while `full` is set, else writes."""

    def __init__(self) -> None:
        self.full = True
        self.refused = 0
        self._write = storage.write_bytes

    def __call__(self, url: str, data: bytes) -> str:
        if self.full:
            self.refused += 1
            raise OSError(errno.ENOSPC, "No space left on device", url)
        return self._write(url, data)


@dataclass
class Heard:
    """What the listeners heard."""

    failures: list[BaseException] = field(default_factory=list)
    queued: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> FullDisk:
    full = FullDisk()
    monkeypatch.setattr(prediction_log.storage, "write_bytes", full)
    return full


@pytest.fixture
def heard() -> Iterator[Heard]:
    out = Heard()
    pairs: list[tuple[list[Any], Callable[..., None]]] = [
        (prediction_log._FAILURE_LISTENERS, out.failures.append),
        (prediction_log._QUEUED_LISTENERS, out.queued.append),
        (prediction_log._LOSS_LISTENERS, out.lost.append),
    ]
    prediction_log.add_failure_listener(out.failures.append)
    prediction_log.add_queued_listener(out.queued.append)
    prediction_log.add_loss_listener(out.lost.append)
    yield out
    for listeners, listener in pairs:
        listeners.remove(listener)


@pytest.fixture
def make_monitor(tmp_path: Path, disk: FullDisk) -> Iterator[Callable[..., Any]]:
    made: list[prediction_log.ShippingMonitor] = []

    def make(**options: Any) -> prediction_log.ShippingMonitor:
        uri = str(tmp_path / f"logs{len(made)}")
        monitor = prediction_log.ShippingMonitor(f"m{len(made)}", uri, pod="pod-a", **options)
        made.append(monitor)
        return monitor

    yield make
    disk.full = False
    for monitor in made:
        monitor.close()


def _rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"encounter_key": f"e{i}", "probability": i / 1000} for i in range(start, start + n)]


def _shipped(monitor: prediction_log.ShippingMonitor) -> list[str]:
    return [
        row["encounter_key"]
        for chunk in served.list_chunks(monitor.store_uri)
        for row in prediction_log.decode_chunk(storage.read_bytes(chunk.url))
    ]


def test_a_full_disk_is_counted_per_refused_chunk_and_rows_stay_queued(
    make_monitor: Callable[..., Any], disk: FullDisk, heard: Heard
) -> None:
    monitor = make_monitor(flush_seconds=30)
    monitor.log_rows(_rows(3))
    with pytest.raises(OSError) as refused:
        monitor.flush()
    assert refused.value.errno == errno.ENOSPC
    monitor.log_rows(_rows(2, start=3))
    with pytest.raises(OSError):
        monitor.flush()
    assert [e.errno for e in heard.failures] == [errno.ENOSPC, errno.ENOSPC]  # type: ignore[attr-defined]
    assert heard.queued == [3, 5] and monitor.queued == 5 == prediction_log.queued_rows()
    assert heard.lost == [] and monitor.rows_lost == 0 and _shipped(monitor) == []

    disk.full = False  # space is back
    assert monitor.flush() == 5
    assert _shipped(monitor) == [f"e{i}" for i in range(5)]  # all of them, in order
    assert heard.queued[-1] == 0 and monitor.queued == 0
    assert len(heard.failures) == 2 == disk.refused  # no failure counted for the success
    assert monitor.flush() == 0 and heard.queued[-1] == 0


def test_queued_rows_are_the_whole_process_s(
    make_monitor: Callable[..., Any], disk: FullDisk, heard: Heard
) -> None:
    """Two monitors in one process (a worker with two logs): the gauge is their sum."""
    first, second = make_monitor(flush_seconds=30), make_monitor(flush_seconds=30)
    first.log_rows(_rows(4))
    second.log_rows(_rows(6))
    with pytest.raises(OSError):
        first.flush()
    assert heard.queued == [10]  # the second monitor's rows wait as well
    disk.full = False
    first.flush()
    second.flush()
    assert heard.queued[-2:] == [6, 0] and prediction_log.queued_rows() == 0


def test_the_writer_keeps_retrying_in_the_background_and_ships_everything(
    make_monitor: Callable[..., Any], disk: FullDisk, heard: Heard
) -> None:
    monitor = make_monitor(flush_seconds=0.02)
    for i in range(20):
        monitor.log_rows(_rows(1, start=i))
    deadline = time.monotonic() + 5
    while len(heard.failures) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(heard.failures) >= 3 and monitor.queued == 20 and heard.queued[-1] == 20
    disk.full = False
    while monitor.queued and time.monotonic() < deadline:
        time.sleep(0.01)
    failures = len(heard.failures)
    time.sleep(0.1)  # several flush periods: no more failures once the disk has room
    assert len(heard.failures) == failures
    assert _shipped(monitor) == [f"e{i}" for i in range(20)] and heard.lost == []
    assert heard.queued[-1] == 0


def test_beyond_the_limit_the_gauge_stays_at_the_limit_and_the_loss_is_heard(
    make_monitor: Callable[..., Any], heard: Heard
) -> None:
    monitor = make_monitor(flush_seconds=30, max_queued_rows=5)
    for i in range(4):
        monitor.log_rows(_rows(2, start=2 * i))
        with pytest.raises(OSError):
            monitor.flush()
    assert heard.queued == [2, 4, 4, 4] and sum(heard.lost) == 4 == monitor.rows_lost
    assert len(heard.failures) == 4


def test_a_failing_listener_never_breaks_shipping(
    make_monitor: Callable[..., Any], disk: FullDisk, heard: Heard
) -> None:
    def broken(_: object) -> None:
        raise RuntimeError("metric backend down")

    prediction_log.add_failure_listener(broken)
    prediction_log.add_queued_listener(broken)
    try:
        monitor = make_monitor(flush_seconds=30)
        monitor.log_rows(_rows(2))
        with pytest.raises(OSError):  # the store's error, not the listener's
            monitor.flush()
        disk.full = False
        assert monitor.flush() == 2
    finally:
        prediction_log._FAILURE_LISTENERS.remove(broken)
        prediction_log._QUEUED_LISTENERS.remove(broken)
    assert len(heard.failures) == 1 and heard.queued == [2, 0]


def test_closing_on_a_full_disk_reports_the_loss_and_empties_the_gauge(
    make_monitor: Callable[..., Any], heard: Heard
) -> None:
    monitor = make_monitor(flush_seconds=30)
    monitor.log_rows(_rows(3))
    monitor.close()
    assert heard.lost == [3] and monitor.rows_lost == 3 and heard.queued[-1] == 0
    assert len(heard.failures) >= 1  # close's attempt (the woken writer may have tried too)
