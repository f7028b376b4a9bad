"""A buffered `bentoml.monitor` backend for the service's prediction log.

Why: BentoML's default monitor writes every row through the `logging` module with a JSON
formatter and flushes the file per row, on the request's path. Under load that was the largest
single cost of a /predict call (about a third of the worker's CPU with the request's thread hop).
This monitor keeps BentoML's API (`bentoml.monitor(...)`, `log_batch`) and its files (the same
`<log_path>/<name>/data/data.<worker>.log` JSON lines, daily rotation, and the schema file), but
the request only appends its rows to memory; a daemon thread writes them in one `write` every
`flush_seconds` (or sooner when `max_pending_rows` are waiting).

What can be lost: only rows not yet written when the process is killed hard (SIGKILL, OOM). A
normal stop writes them: the service's shutdown hook calls `close_all` (BentoML's workers do not
run `atexit` handlers on SIGTERM, so the hook is the one place that does it).

Selected in the service with
`monitoring={"type": "readmit.serving.prediction_log.BufferedMonitor"}`.
"""

from __future__ import annotations

import collections
import datetime
import logging
import threading
import weakref
from collections.abc import Iterable
from typing import Any

import orjson
from bentoml._internal.context import trace_context
from bentoml._internal.monitoring.base import MON_DATAS_VAR
from bentoml._internal.monitoring.default import DefaultMonitor

logger = logging.getLogger("readmit.serving.prediction_log")

DEFAULT_FLUSH_SECONDS = 1.0
DEFAULT_MAX_PENDING_ROWS = 20_000
_OPEN: weakref.WeakSet[BufferedMonitor] = weakref.WeakSet()


class BufferedMonitor(DefaultMonitor):
    """DefaultMonitor's files and format, written in the background in batches."""

    def __init__(
        self,
        name: str,
        log_path: str,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_pending_rows: int = DEFAULT_MAX_PENDING_ROWS,
        **options: Any,
    ) -> None:
        super().__init__(name, log_path, **options)
        self.flush_seconds = float(flush_seconds)
        self.max_pending_rows = int(max_pending_rows)
        self._pending: list[tuple[list[str], list[list[Any]], dict[str, str]]] = []
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._writer: threading.Thread | None = None
        _OPEN.add(self)

    def _init_logger(self) -> None:
        """The default loggers and files; data lines are written pre-encoded (one JSON per row)."""
        super()._init_logger()
        assert self.data_logger is not None
        for handler in self.data_logger.handlers:
            handler.setFormatter(logging.Formatter("%(message)s"))

    def log_batch(self, data_batch: Iterable[Any], name: str, role: str, data_type: str) -> None:
        """A column of values: checked and registered once, not once per value (1,000-row
        batches log 50,000 values)."""
        values = list(data_batch)
        if not values:
            return
        self.log(values[0], name, role, data_type)
        column = name + "_" if name in self.PRESERVED_COLUMNS else name
        datas = MON_DATAS_VAR.get()
        assert datas is not None
        datas[column].extend(values[1:])

    def export_data(self, datas: dict[str, collections.deque[Any]]) -> None:
        """Queue this record's rows (called by `bentoml.monitor` when the `with` block ends)."""
        extra = {
            self.COLUMN_TIME: datetime.datetime.now().isoformat(),
            self.COLUMN_RID: str(trace_context.request_id),
            self.COLUMN_TID: str(trace_context.trace_id),
        }
        # The columns as they are; rows are assembled by the writer thread, off the request.
        record = (list(datas), [list(column) for column in datas.values()], extra)
        with self._lock:
            self._pending.append(record)
            self._pending_rows += len(record[1][0]) if record[1] else 0
            pending = self._pending_rows
        if self._writer is None:
            self._start_writer()
        if pending >= self.max_pending_rows:
            self._wake.set()

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is not None:
                return
            self._writer = threading.Thread(
                target=self._write_loop, name=f"prediction-log-{self.name}", daemon=True
            )
            self._writer.start()

    def _write_loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the log must never take the service down; say so loudly
                logger.exception("writing the prediction log failed; will retry")

    def flush(self) -> int:
        """Write every queued row now; returns how many were written."""
        with self._write_lock:
            with self._lock:
                records, self._pending, self._pending_rows = self._pending, [], 0
            rows = [
                {**dict(zip(names, values, strict=True)), **extra}
                for names, columns, extra in records
                for values in zip(*columns, strict=True)
            ]
            if not rows:
                return 0
            if self.data_logger is None:
                self._init_logger()
            assert self.data_logger is not None
            options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
            text = b"\n".join(orjson.dumps(row, default=str, option=options) for row in rows)
            self.data_logger.info(text.decode())
            return len(rows)

    def close(self) -> None:
        """Stop the writer and write what is left (the service's shutdown hook)."""
        self._closed = True
        self._wake.set()
        try:
            self.flush()
        except Exception:
            logger.exception("writing the last prediction log rows failed")


def close_all() -> int:
    """Close every buffered monitor of this process (writes their queued rows); returns count."""
    monitors = list(_OPEN)
    for monitor in monitors:
        monitor.close()
    return len(monitors)
