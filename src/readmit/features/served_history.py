"""Served encounters reach the patient-history store the service reads.

A model carries the history of the patients it was trained on (`PatientHistory`, fitted). The
encounters the service scores after that are recorded here, per patient pseudonym, in the order
they were served: monitoring records them from the shipped prediction log
(`readmit.monitoring.windows`), so a returning patient's latest encounters count before the next
retraining. `PatientHistory.lookup` adds them to the model's history with the same `advance` rule
training uses (`history_parity` in `benchmarks/feedback.py`), skipping encounters the model was
already trained on.

Each entry keeps when it was recorded: a lookup inside `history.as_of(t)` sees only what was
recorded before t. The service scores each request as of the instant it logs with it, and the
skew check re-scores a logged row as of that instant, so both see the same entries.

Backends (`READMIT_HISTORY_STORE`):
- `sqlite:///abs/path`: embedded, the default for one machine (WAL: the service's workers read while
  monitoring writes);
- `redis://host:port/db`: shared by many pods.
Only pseudonyms and visit facts are stored (no outcome, no raw identifier).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import pandas as pd

from readmit.features.history import Entry, frame_entries
from readmit.pseudonyms import ENCOUNTER_KEY, PATIENT_KEY

ServedEntry = tuple[str, Entry, float]
"""(encounter key, what the encounter adds to its patient's history, unix time recorded)."""
ServedRow = tuple[str, str, str, Entry]
"""(patient key, encounter key, served at (ISO UTC), entry): one served encounter to record."""
_QUERY_CHUNK = 500


class ServedHistory(Protocol):
    """Served encounters per patient, in the order they were served."""

    def entries(self, patient_keys: Sequence[str]) -> dict[str, list[ServedEntry]]:
        """The recorded encounters of each patient (patients with none are left out)."""
        ...

    def add(self, rows: Sequence[ServedRow]) -> int:
        """Record served encounters (an encounter already recorded is skipped); returns how
        many were new."""
        ...


class SqliteServedHistory:
    """The embedded store: one SQLite file, one connection per thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connection() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS served (encounter_key TEXT PRIMARY KEY, "
                "patient_key TEXT NOT NULL, served_at TEXT NOT NULL, entry TEXT NOT NULL, "
                "recorded_at REAL NOT NULL)"
            )
            db.execute(
                "CREATE INDEX IF NOT EXISTS served_patient ON served (patient_key, served_at)"
            )

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            self._local.db = db
        return db

    def entries(self, patient_keys: Sequence[str]) -> dict[str, list[ServedEntry]]:
        """The recorded encounters of each patient, in served order."""
        wanted = sorted({k for k in patient_keys if k})
        out: dict[str, list[ServedEntry]] = {}
        db = self._connection()
        for i in range(0, len(wanted), _QUERY_CHUNK):
            part = wanted[i : i + _QUERY_CHUNK]
            marks = ",".join("?" * len(part))
            rows = db.execute(
                "SELECT patient_key, encounter_key, entry, recorded_at FROM served "
                f"WHERE patient_key IN ({marks}) ORDER BY served_at, rowid",  # nosec B608: marks
                part,
            )
            for pkey, ekey, entry, recorded in rows:
                out.setdefault(pkey, []).append((ekey, tuple(json.loads(entry)), recorded))
        return out

    def add(self, rows: Sequence[ServedRow]) -> int:
        """Record served encounters in one transaction; repeats are ignored."""
        now = time.time()
        db = self._connection()
        before = db.total_changes
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT OR IGNORE INTO served VALUES (?, ?, ?, ?, ?)",
                [(e, p, at, json.dumps(list(entry)), now) for p, e, at, entry in rows],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return db.total_changes - before


_REDIS_ADD = """
local added = 0
for i = 1, #ARGV, 3 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2] .. ARGV[i + 1], ARGV[i + 2])
    added = added + 1
  end
end
return added
"""


class RedisServedHistory:
    """The shared store for many pods: a list per patient, a set of recorded encounters; one
    Lua script records a batch atomically."""

    def __init__(self, url: str, prefix: str = "readmit:history:") -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.prefix = prefix
        self._add = self.client.register_script(_REDIS_ADD)

    def entries(self, patient_keys: Sequence[str]) -> dict[str, list[ServedEntry]]:
        """The recorded encounters of each patient, in served order."""
        wanted = sorted({k for k in patient_keys if k})
        pipe = self.client.pipeline(transaction=False)
        for pkey in wanted:
            pipe.lrange(f"{self.prefix}p:{pkey}", 0, -1)
        out: dict[str, list[ServedEntry]] = {}
        for pkey, items in zip(wanted, pipe.execute(), strict=True):
            if items:
                decoded = [json.loads(item) for item in items]
                out[pkey] = [(e, tuple(entry), recorded) for e, entry, recorded in decoded]
        return out

    def add(self, rows: Sequence[ServedRow]) -> int:
        """Record served encounters (in the order given); repeats are ignored."""
        now = time.time()
        args: list[str] = []
        for pkey, ekey, _, entry in rows:
            args += [ekey, pkey, json.dumps([ekey, list(entry), now])]
        if not args:
            return 0
        keys = [f"{self.prefix}encounters", f"{self.prefix}p:"]
        return int(self._add(keys=keys, args=args))


def open_store(uri: str) -> ServedHistory:
    """The store a `READMIT_HISTORY_STORE` URI names (`sqlite:///path` or `redis://...`)."""
    if uri.startswith("sqlite://"):
        return SqliteServedHistory(uri.removeprefix("sqlite://"))  # sqlite:///abs/path
    if uri.startswith(("redis://", "rediss://", "unix://")):
        return RedisServedHistory(uri)
    raise ValueError(
        f"READMIT_HISTORY_STORE={uri!r}: expected sqlite:///<path> or redis://<host>:<port>/<db>"
    )


def served_rows(frame: pd.DataFrame, time_column: str = "timestamp") -> list[ServedRow]:
    """Logged rows -> served encounters to record (rows without both keys are left out), in
    served order."""
    ordered = frame.sort_values(time_column, kind="stable")
    entries = frame_entries(ordered)
    times = pd.to_datetime(ordered[time_column], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")
    out = []
    for pkey, ekey, at, entry in zip(
        ordered[PATIENT_KEY], ordered[ENCOUNTER_KEY], times, entries, strict=True
    ):
        if isinstance(pkey, str) and isinstance(ekey, str):
            out.append((pkey, ekey, at, entry))
    return out
