"""Reading what the service served: the prediction-log chunks it shipped to the store.

Chunks (`readmit.serving.prediction_log`) are immutable and named by their first row's UTC
time, so a reader lists a folder, reads the chunks it has not read yet, and assigns each ROW to
a time window by the row's own timestamp. A chunk that cannot be read (truncated, corrupt, not
rows) is set aside with the reason, never fatal: the rest is processed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd

from readmit import storage
from readmit.data import coerce_types
from readmit.experiments.spec import CHALLENGER_PROBABILITY, LOG_COLUMNS
from readmit.layout import CHUNK_SUFFIX
from readmit.serving.prediction_log import TIME_COLUMN, decode_chunk

PROBABILITY_COLUMN = "probability"
REQUIRED_COLUMNS = (TIME_COLUMN, PROBABILITY_COLUMN, "model_tag")


@dataclass(frozen=True)
class Chunk:
    """One shipped chunk: where it is and its name below the log folder (`<date>/<file>`)."""

    url: str
    name: str

    @property
    def first_row_at(self) -> datetime:
        """The chunk's first row time, from its name."""
        stamp = self.name.rsplit("/", 1)[-1].split("-", 1)[0]
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class BadChunk:
    """A chunk that was set aside, and why."""

    name: str
    reason: str


def list_chunks(log_uri: str, after: str | None = None) -> list[Chunk]:
    """Chunks below `log_uri` in name (time) order; only those named after `after` if given."""
    root = log_uri.rstrip("/")
    chunks = []
    for url in storage.list_files(root, f"*/*{CHUNK_SUFFIX}"):
        name = "/".join(url.rsplit("/", 2)[-2:])
        if after is None or name > after:
            chunks.append(Chunk(url=url, name=name))
    return sorted(chunks, key=lambda c: c.name)


def rows_frame(rows: Sequence[dict[str, object]]) -> pd.DataFrame:
    """Logged rows -> a frame: schema dtypes for the features, UTC times, float probabilities,
    and the live-experiment columns (`experiments.spec.LOG_COLUMNS`; missing in chunks written
    before them, then empty: id and variant None, the challenger's probability NaN).

    Raises:
        ValueError: a required column is missing or a time or probability does not parse.
    """
    frame = pd.DataFrame.from_records(list(rows))
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"rows without {', '.join(missing)}")
    frame = coerce_types(frame)
    frame[TIME_COLUMN] = pd.to_datetime(frame[TIME_COLUMN], utc=True, format="ISO8601")
    frame[PROBABILITY_COLUMN] = pd.to_numeric(frame[PROBABILITY_COLUMN], errors="raise")
    for column in LOG_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    frame[CHALLENGER_PROBABILITY] = pd.to_numeric(frame[CHALLENGER_PROBABILITY], errors="raise")
    return frame


def read_chunk(chunk: Chunk) -> pd.DataFrame:
    """One chunk's rows. Raises ValueError with the reason when it cannot be used."""
    try:
        blob = storage.read_bytes(chunk.url)
    except FileNotFoundError as exc:
        raise ValueError(f"vanished while reading: {exc}") from exc
    rows = decode_chunk(blob)
    if not rows:
        raise ValueError("no rows")
    try:
        return rows_frame(rows)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"rows do not parse: {exc}") from exc


def set_aside(chunk: Chunk, bad_dir: str, reason: str) -> BadChunk:
    """Move an unreadable chunk out of the log into `bad_dir`, with a note of the reason."""
    target = f"{bad_dir.rstrip('/')}/{chunk.name}"
    storage.copy(chunk.url, target)
    storage.write_json(target + ".reason.json", {"chunk": chunk.name, "reason": reason})
    storage.remove(chunk.url)
    return BadChunk(chunk.name, reason)


def read_chunks(
    chunks: Iterable[Chunk], bad_dir: str
) -> tuple[list[tuple[Chunk, pd.DataFrame]], list[BadChunk]]:
    """Read chunks; unreadable ones are set aside (reported, never fatal)."""
    good, bad = [], []
    for chunk in chunks:
        try:
            good.append((chunk, read_chunk(chunk)))
        except ValueError as exc:
            bad.append(set_aside(chunk, bad_dir, str(exc)))
    return good, bad


def window_start(times: pd.Series, window: timedelta) -> pd.Series:
    """The start of each row's time window (windows are aligned on the UTC epoch)."""
    return times.dt.floor(pd.Timedelta(window))


def window_id(start: pd.Timestamp) -> str:
    """A window's name: its UTC start."""
    return start.strftime("%Y%m%dT%H%M%SZ")
