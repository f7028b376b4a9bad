"""Loading raw encounters from any fsspec URL, splits grouped by patient, time-ordered batches."""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from readmit import storage
from readmit.pseudonyms import patient_groups
from readmit.schema import COLUMNS, DIED_OR_HOSPICE_IDS, RAW_COLUMNS, Kind

NA_VALUES = ["?"]


class DataFormatError(ValueError):
    """The input is not a readable encounters CSV (empty, binary, not delimited, no header)."""


class ChecksumError(ValueError):
    """The data does not match its recorded sha256: it is not the data set we think it is."""


@dataclass(frozen=True)
class RawFile:
    """A file as stored (`raw`, maybe gzip) and its uncompressed `content`, with its sha256."""

    raw: bytes
    content: bytes
    sha256: str
    uri: str


@dataclass(frozen=True)
class RawBatch:
    """Encounters as read, plus what lineage needs to know about where they came from."""

    frame: pd.DataFrame
    sha256: str
    uri: str
    raw: bytes


def decompress(raw: bytes) -> bytes:
    """Uncompressed bytes (gzip detected by magic number, not by file name)."""
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def sha256_hex(data: bytes) -> str:
    """Hex sha256 of bytes."""
    return hashlib.sha256(data).hexdigest()


def parse_encounters(data: bytes, expected: Sequence[str] = RAW_COLUMNS) -> pd.DataFrame:
    """Parse uncompressed CSV bytes into a frame with the schema's dtypes.

    `?` is missing; `None` (in max_glu_serum / A1Cresult) stays a category; ICD-9 codes stay
    strings. Integer columns holding something that is not an integer become missing, which the
    validation suite then reports by column. Columns are not added or dropped here: a missing or
    extra column is the suite's to report.
    """
    if not data.strip():
        raise DataFormatError("the file is empty: no header and no rows")
    if b"\x00" in data[:4096]:
        raise DataFormatError("the file is binary, not a CSV of encounters")
    try:
        frame = pd.read_csv(
            io.BytesIO(data), dtype=str, keep_default_na=False, na_values=NA_VALUES,
            low_memory=False,
        )  # fmt: skip
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise DataFormatError(f"the file is not a readable CSV: {exc}") from exc
    if frame.shape[1] < 2:
        raise DataFormatError(
            f"the file is not a comma-separated table (found {frame.shape[1]} column); "
            f"expected its {len(expected)} columns: {', '.join(expected[:4])}"
            f"{', ...' if len(expected) > 4 else ''}"
        )
    return coerce_types(frame)


def coerce_types(frame: pd.DataFrame) -> pd.DataFrame:
    """Apply the schema's dtypes to the columns present (strings -> Int64 / string)."""
    out = frame.copy()
    for column in COLUMNS:
        if column.name not in out.columns:
            continue
        if column.kind in (Kind.ID, Kind.INT):
            numbers = pd.to_numeric(out[column.name], errors="coerce")
            whole = numbers.where(np.isclose(numbers, np.round(numbers)))
            out[column.name] = whole.round().astype("Int64")
        else:
            out[column.name] = out[column.name].astype("string")
    return out


def read_raw(uri: str, expected_sha256: str | None = None) -> RawFile:
    """Read a file from a path or fsspec URL (file://, s3://), gzip or plain, without parsing.

    Validation needs the bytes before parsing, so an unreadable file can still be quarantined.

    Raises:
        ChecksumError: the uncompressed bytes do not hash to `expected_sha256`.
    """
    raw = storage.read_bytes(uri)
    content = decompress(raw)
    digest = sha256_hex(content)
    if expected_sha256 and digest != expected_sha256:
        raise ChecksumError(
            f"{uri}: sha256 {digest} does not match the expected {expected_sha256}; "
            "the file was changed or is not the shipped data set"
        )
    return RawFile(raw=raw, content=content, sha256=digest, uri=uri)


def read_encounters(uri: str, expected_sha256: str | None = None) -> RawBatch:
    """Read and parse encounters (see `read_raw` and `parse_encounters`).

    Raises:
        ChecksumError: the content is not what `expected_sha256` says.
        DataFormatError: the content is not a readable encounters CSV.
    """
    file = read_raw(uri, expected_sha256)
    return RawBatch(frame=parse_encounters(file.content), sha256=file.sha256, uri=uri, raw=file.raw)


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """Serialise encounters back to the data set's CSV dialect (`?` for missing)."""
    return frame.to_csv(index=False, na_rep="?").encode("utf-8")


def in_cohort(frame: pd.DataFrame) -> np.ndarray:
    """The model's cohort, the one rule: every encounter but those that ended in death or
    hospice (readmission cannot, or almost never does, follow them). A feed carries both kinds;
    training and evaluation use the cohort, monitoring watches the feed and the cohort's share.
    """
    excluded = frame["discharge_disposition_id"].isin(DIED_OR_HOSPICE_IDS)
    return ~excluded.fillna(False).to_numpy(dtype=bool)


def record_in_cohort(record: Mapping[str, Any]) -> bool:
    """`in_cohort` for one record (a request): False when the encounter ended in death or
    hospice."""
    return record.get("discharge_disposition_id") not in DIED_OR_HOSPICE_IDS


def exclude_died_or_hospice(frame: pd.DataFrame) -> pd.DataFrame:
    """The cohort's rows of a frame (`in_cohort`), re-indexed."""
    return frame.loc[in_cohort(frame)].reset_index(drop=True)


@dataclass(frozen=True)
class FeedSplit:
    """A feed split by patient: what a model trains on and what it is judged on.

    `train_feed` and `holdout_feed` are raw feed rows (every discharge disposition); `train`
    and `holdout` are their cohort rows. No patient is on both sides.
    """

    train_feed: pd.DataFrame
    holdout_feed: pd.DataFrame

    @property
    def train(self) -> pd.DataFrame:
        """Cohort rows of the training patients: what the model is fitted on."""
        return exclude_died_or_hospice(self.train_feed)

    @property
    def holdout(self) -> pd.DataFrame:
        """Cohort rows of the holdout patients: the registered (served-path) metrics."""
        return exclude_died_or_hospice(self.holdout_feed)


def split_feed(
    frame: pd.DataFrame,
    *,
    window: str,
    reference_fraction: float,
    holdout_fraction: float,
    seed: int,
) -> FeedSplit:
    """The training flow's split, in one place (retraining reproduces it from the same
    parameters): the `window` ("all", or the oldest "reference" share of encounters), then a
    patient-disjoint holdout drawn from the whole feed."""
    feed = frame
    if window == "reference":
        feed, _ = reference_and_batches(frame, reference_fraction)
    train_feed, holdout_feed = split_by_patient(feed, holdout_fraction, seed)
    return FeedSplit(train_feed, holdout_feed)


def in_time_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Encounters sorted by encounter_id, the data set's only time proxy (a keyed frame without
    it, served rows, is already in time order and stays so)."""
    if "encounter_id" not in frame.columns:
        return frame.reset_index(drop=True)
    return frame.sort_values("encounter_id", kind="stable").reset_index(drop=True)


def split_by_patient(
    frame: pd.DataFrame, holdout_fraction: float = 0.2, seed: int = 42
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train / holdout split in which no patient appears on both sides (no leakage via repeats)."""
    splitter = GroupShuffleSplit(n_splits=1, test_size=holdout_fraction, random_state=seed)
    train_idx, holdout_idx = next(splitter.split(frame, groups=patient_groups(frame)))
    train = frame.iloc[np.sort(train_idx)].reset_index(drop=True)
    holdout = frame.iloc[np.sort(holdout_idx)].reset_index(drop=True)
    return train, holdout


def reference_and_batches(
    frame: pd.DataFrame, reference_fraction: float = 0.6, batch_size: int = 5000
) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Cut time-ordered encounters into a reference window and later batches of `batch_size`.

    The reference window is what a model is first trained on; the batches replay the future for
    monitoring. The last batch may be smaller.
    """
    if not 0 < reference_fraction < 1:
        raise ValueError("reference_fraction must be between 0 and 1")
    ordered = in_time_order(frame)
    cut = int(len(ordered) * reference_fraction)
    future = ordered.iloc[cut:]
    batches = [
        future.iloc[i : i + batch_size].reset_index(drop=True)
        for i in range(0, len(future), batch_size)
    ]
    return ordered.iloc[:cut].reset_index(drop=True), batches


def missing_columns(frame: pd.DataFrame) -> list[str]:
    """Schema columns absent from a frame, in schema order."""
    return [c for c in RAW_COLUMNS if c not in frame.columns]
