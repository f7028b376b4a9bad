"""The service's prediction log, shipped to the artifact store as append-only chunk files.

Why: monitoring must see what the service answered, from every worker of every pod, with no
shared local folder. So the log is a `bentoml.monitor` backend (`ShippingMonitor`) whose rows
the request only appends to memory; a daemon thread ships them every `flush_seconds` (sooner
when `max_pending_rows` wait) as ONE new gzipped JSON-lines file in the store, through fsspec
(a local folder or S3). A chunk is written atomically (`storage.write_bytes`), never appended
to, and named so that no two writers can collide and names sort by time
(`layout.StoreLayout.prediction_log_chunk`).

Rows carry the encounter's and patient's pseudonyms (`readmit.pseudonyms`), the input features,
the probability, risk label and model tag, and the time: never a raw identifier (`log_rows`).

What can be lost: a normal stop (SIGTERM) ships what is queued: the service's shutdown hook
calls `close_all`. A hard kill (SIGKILL, OOM) loses at most the rows of the last
`flush_seconds`. When the store refuses a chunk (a full disk, an S3 outage), its rows stay
queued and are retried on the next flush; only beyond `max_queued_rows` are the oldest dropped,
counted in `rows_lost` and logged: the service keeps answering. Listeners make all three visible
on /metrics (the service wires them): each refused chunk (`add_failure_listener`,
`readmit_prediction_log_ship_failures_total`), the rows of the process still waiting after each
attempt (`add_queued_listener`, `readmit_prediction_log_queued_rows`) and dropped rows
(`add_loss_listener`, `readmit_prediction_log_rows_lost_total`).

Selected in the service with
`monitoring={"type": "readmit.serving.prediction_log.ShippingMonitor", "options": {...}}`.
"""

from __future__ import annotations

import collections
import datetime
import gzip
import logging
import os
import re
import socket
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import orjson
from bentoml._internal.context import server_context
from bentoml._internal.monitoring.base import MON_COLUMN_VAR, MON_DATAS_VAR, MonitorBase

from readmit import layout, storage

logger = logging.getLogger("readmit.serving.prediction_log")

DEFAULT_FLUSH_SECONDS = 2.0
DEFAULT_MAX_PENDING_ROWS = 20_000
DEFAULT_MAX_QUEUED_ROWS = 500_000
"""Rows kept while the store refuses chunks (about 0.5 GB): beyond it the oldest are dropped."""
TIME_COLUMN = "timestamp"
_OPEN: weakref.WeakSet[ShippingMonitor] = weakref.WeakSet()
_LOSS_LISTENERS: list[Callable[[int], None]] = []
_FAILURE_LISTENERS: list[Callable[[BaseException], None]] = []
_QUEUED_LISTENERS: list[Callable[[int], None]] = []
_T = TypeVar("_T")

Record = tuple[list[str], list[list[Any]], str]
"""One `bentoml.monitor` column record: column names, column values, UTC time."""
Queued = tuple[list[dict[str, Any]], str]
"""One request's rows as queued (without their time), and their UTC time."""


def utc_now() -> datetime.datetime:
    """The time stamped on rows and chunk names (UTC: pods in different zones agree)."""
    return datetime.datetime.now(datetime.UTC)


def encode_chunk(rows: Iterable[dict[str, Any]]) -> bytes:
    """Rows -> gzipped JSON lines (numpy values and non-JSON types stringified)."""
    options = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE
    body = b"".join(orjson.dumps(row, default=str, option=options) for row in rows)
    return gzip.compress(body, compresslevel=1)


def decode_chunk(blob: bytes) -> list[dict[str, Any]]:
    """Gzipped JSON lines -> rows. Raises ValueError (with the reason) on a truncated or
    corrupt chunk, so a reader can set it aside instead of failing."""
    try:
        text = gzip.decompress(blob)
    except (OSError, EOFError) as exc:
        raise ValueError(f"not a complete gzip chunk: {exc}") from exc
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"line {n} is not JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise ValueError(f"line {n} is not a JSON object")
        rows.append(row)
    return rows


def records_to_rows(records: Iterable[Record]) -> list[dict[str, Any]]:
    """Queued column records -> row dicts, each with its record's time."""
    return [
        {**dict(zip(names, values, strict=True)), TIME_COLUMN: stamp}
        for names, columns, stamp in records
        for values in zip(*columns, strict=True)
    ]


def stamped_rows(queued: Iterable[Queued]) -> list[dict[str, Any]]:
    """Queued rows, each with its request's time (last, as in `records_to_rows`)."""
    out = []
    for rows, stamp in queued:
        for row in rows:
            row[TIME_COLUMN] = stamp
        out.extend(rows)
    return out


class ShippingMonitor(MonitorBase[Any]):
    """`bentoml.monitor` backend: rows queued in memory, shipped as chunk files to the store.

    Two ways in: BentoML's column API (`log` / `log_batch` per column, then `export_data`), and
    `log_rows`, one call per request with the rows built already. The service uses `log_rows`:
    the column API costs about 2 us per column and request (50 columns) and leaves two
    containers per column alive until the flush, which was a quarter of the service's c8
    throughput (benchmarks/feedback.py `logging_rps_ratio`).
    """

    PRESERVED_COLUMNS = (TIME_COLUMN,)

    def __init__(
        self,
        name: str,
        store_uri: str,
        flush_seconds: float = DEFAULT_FLUSH_SECONDS,
        max_pending_rows: int = DEFAULT_MAX_PENDING_ROWS,
        max_queued_rows: int = DEFAULT_MAX_QUEUED_ROWS,
        pod: str | None = None,
        **options: Any,
    ) -> None:
        super().__init__(name, **options)
        self.store_uri = store_uri.rstrip("/")
        self.flush_seconds = float(flush_seconds)
        self.max_pending_rows = int(max_pending_rows)
        self.max_queued_rows = int(max_queued_rows)
        self.pod = re.sub(r"[^A-Za-z0-9_.-]", "-", pod or socket.gethostname())
        self.rows_shipped = 0
        self.rows_lost = 0
        self.chunks_shipped = 0
        self._seq = 0
        self._pending: collections.deque[Queued] = collections.deque()
        self._pending_rows = 0
        self._lock = threading.Lock()
        self._ship_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._writer: threading.Thread | None = None
        _OPEN.add(self)

    # ------------------------------------------------------------------ bentoml.monitor API

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

    def export_schema(self, columns_schema: dict[str, dict[str, str]]) -> None:
        """Nothing to write: the columns are `readmit.serving.log_columns`, in the code."""

    def export_data(self, datas: dict[str, collections.deque[Any]]) -> None:
        """Queue this record's rows (called by `bentoml.monitor` when the `with` block ends)."""
        names, columns = list(datas), list(datas.values())
        rows = [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
        self._queue(rows)

    def log_rows(self, rows: list[dict[str, Any]], at: str | None = None) -> None:
        """Queue one request's rows, built already (`readmit.serving.log_rows`), inside a
        `with bentoml.monitor(...)` block: one call instead of one per column. The monitor owns
        the rows from here on (it stamps their time into them when it ships them): `at` (ISO
        UTC), the instant the request was scored as of (`readmit.serving.score_as_of_now`),
        else now."""
        self._queue(rows, at)

    def stop_record(self) -> None:
        """End a `bentoml.monitor` block; one that only called `log_rows` has nothing left."""
        if MON_DATAS_VAR.get():
            super().stop_record()
            return
        MON_DATAS_VAR.set(None)
        if self.columns_schema is None:
            MON_COLUMN_VAR.set(None)

    def _queue(self, rows: list[dict[str, Any]], at: str | None = None) -> None:
        if not rows:
            return
        stamp = at or utc_now().isoformat(timespec="microseconds")
        with self._lock:
            self._pending.append((rows, stamp))
            self._pending_rows += len(rows)
            pending = self._pending_rows
        if self._writer is None:
            self._start_writer()
        if pending >= self.max_pending_rows:
            self._wake.set()

    # ------------------------------------------------------------------ shipping

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
                logger.exception("shipping the prediction log failed; rows stay queued")

    def chunk_url(self, first_row_time: datetime.datetime) -> str:
        """A new, unique chunk name: time, pod, worker, process, sequence."""
        self._seq += 1
        worker = server_context.worker_index or 0
        writer = f"{self.pod}-w{worker}-p{os.getpid()}"
        return f"{self.store_uri}/{layout.chunk_relpath(first_row_time, writer, self._seq)}"

    def flush(self) -> int:
        """Ship every queued row now as one chunk; returns how many rows were shipped.

        On a store error the rows go back to the front of the queue (their order kept), the
        failure listeners are told and the error is raised; rows beyond `max_queued_rows` are
        dropped, oldest first, and counted. After every attempt the queued-rows listeners get
        the rows this process still holds (`queued_rows`).
        """
        with self._ship_lock:
            with self._lock:
                records, self._pending, self._pending_rows = self._pending, collections.deque(), 0
            if not records:
                return 0
            rows = stamped_rows(records)
            try:
                url = self.chunk_url(datetime.datetime.fromisoformat(records[0][1]))
                storage.write_bytes(url, encode_chunk(rows))
            except Exception as exc:
                self._requeue(records, len(rows))
                _notify(_FAILURE_LISTENERS, exc)
                raise
            finally:
                _notify(_QUEUED_LISTENERS, queued_rows())
            self.rows_shipped += len(rows)
            self.chunks_shipped += 1
            return len(rows)

    @property
    def queued(self) -> int:
        """Rows waiting to be shipped (retried ones included)."""
        return self._pending_rows

    def _requeue(self, records: collections.deque[Queued], rows: int) -> None:
        with self._lock:
            records.extend(self._pending)
            self._pending = records
            self._pending_rows += rows
            lost = 0
            while self._pending_rows > self.max_queued_rows and len(self._pending) > 1:
                n = len(self._pending.popleft()[0])
                self._pending_rows -= n
                lost += n
        if lost:
            self.rows_lost += lost
            logger.error(
                "prediction log: the store refuses chunks and %d queued rows exceed the limit; "
                "dropped the oldest %d",
                self.max_queued_rows,
                lost,
            )
            _notify(_LOSS_LISTENERS, lost)

    def close(self) -> None:
        """Stop the writer and ship what is left (the service's shutdown hook)."""
        self._closed = True
        self._wake.set()
        try:
            self.flush()
        except Exception:
            with self._lock:
                lost, self._pending, self._pending_rows = self._pending_rows, collections.deque(), 0
            self.rows_lost += lost
            logger.exception("shipping the last prediction log rows failed: %d rows lost", lost)
            _notify(_LOSS_LISTENERS, lost)
            _notify(_QUEUED_LISTENERS, queued_rows())


def add_loss_listener(listener: Callable[[int], None]) -> None:
    """Call `listener(rows)` whenever rows are dropped (the service counts them on /metrics)."""
    _LOSS_LISTENERS.append(listener)


def add_failure_listener(listener: Callable[[BaseException], None]) -> None:
    """Call `listener(error)` whenever the store refuses a chunk (its rows stay queued): a full
    disk or an S3 outage shows on /metrics before any row is lost."""
    _FAILURE_LISTENERS.append(listener)


def add_queued_listener(listener: Callable[[int], None]) -> None:
    """Call `listener(rows)` after every shipping attempt with the rows this process still
    holds (`queued_rows`): 0 while the store takes chunks, growing while it refuses them."""
    _QUEUED_LISTENERS.append(listener)


def _notify(listeners: Sequence[Callable[[_T], None]], value: _T) -> None:
    for listener in list(listeners):
        try:
            listener(value)
        except Exception:  # a metric must never break shipping
            logger.exception("a prediction-log listener failed")


def queued_rows() -> int:
    """Rows queued, not yet shipped, in every shipping monitor of this process."""
    return sum(monitor.queued for monitor in list(_OPEN))


def close_all() -> int:
    """Close every shipping monitor of this process (ships their queued rows); returns count."""
    monitors = list(_OPEN)
    for monitor in monitors:
        monitor.close()
    return len(monitors)


def open_monitors() -> list[ShippingMonitor]:
    """The shipping monitors of this process."""
    return list(_OPEN)
