"""Batches in the artifact store: the inbox of new encounters, their late labels, processed ones
(`inbox/`, `batches/`, `labels/`: see `readmit.layout`). Labels arrive one delay after their
batch (encounter_id, readmitted): internal data, never published as an artifact."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pandas as pd

from readmit import data, storage
from readmit.layout import StoreLayout
from readmit.schema import LABEL_COLUMN


@dataclass(frozen=True)
class BatchPaths:
    """Where one batch lives in the store."""

    inbox: str
    processed: str
    labels: str


def batch_id(index: int) -> str:
    """Sortable batch name: batch-0007."""
    return f"batch-{index:04d}"


def paths(artifacts_uri: str, batch: str) -> BatchPaths:
    """Store URLs of a batch."""
    layout = StoreLayout(artifacts_uri)
    return BatchPaths(
        layout.batch_file("inbox", batch),
        layout.batch_file("batches", batch),
        layout.batch_file("labels", batch),
    )


def split_labels(batch: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Encounters as they arrive at discharge (no outcome yet) and their outcomes, apart."""
    features = batch.drop(columns=[LABEL_COLUMN], errors="ignore")
    labels = batch[["encounter_id", LABEL_COLUMN]].copy()
    return features, labels


def publish_batch(artifacts_uri: str, batch: str, encounters: pd.DataFrame) -> str:
    """Drop a batch of new encounters into the inbox (atomic write)."""
    return storage.write_bytes(paths(artifacts_uri, batch).inbox, data.to_csv_bytes(encounters))


def publish_labels(artifacts_uri: str, batch: str, labels: pd.DataFrame) -> str:
    """Publish the outcomes of a batch once they are known."""
    return storage.write_bytes(paths(artifacts_uri, batch).labels, data.to_csv_bytes(labels))


def pending(artifacts_uri: str) -> list[str]:
    """Batch ids waiting in the inbox, oldest first."""
    files = storage.list_files(StoreLayout(artifacts_uri).inbox_dir(), "batch-*.csv")
    return [f.rsplit("/", 1)[1].removesuffix(".csv") for f in files]


def mark_processed(artifacts_uri: str, batch: str) -> str:
    """Move a batch from the inbox to `batches/` (copy, then delete: never lost in between)."""
    where = paths(artifacts_uri, batch)
    storage.copy(where.inbox, where.processed)
    fs, path = storage.filesystem(where.inbox)
    fs.rm(path)
    return where.processed


def discard(artifacts_uri: str, batch: str) -> None:
    """Remove a batch from the inbox once it was quarantined (the quarantine keeps its copy)."""
    storage.remove(paths(artifacts_uri, batch).inbox)


def read_labels(artifacts_uri: str, batch: str) -> pd.DataFrame | None:
    """Outcomes of a batch, or None if they have not arrived yet."""
    url = paths(artifacts_uri, batch).labels
    if not storage.exists(url):
        return None
    return pd.read_csv(io.BytesIO(storage.read_bytes(url)), dtype={LABEL_COLUMN: "string"})


def labelled_batches(artifacts_uri: str) -> list[str]:
    """Processed batches whose labels have arrived, oldest first."""
    files = storage.list_files(StoreLayout(artifacts_uri).processed_dir(), "batch-*.csv")
    ids = [f.rsplit("/", 1)[1].removesuffix(".csv") for f in files]
    return [b for b in ids if storage.exists(paths(artifacts_uri, b).labels)]


def with_labels(encounters: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """Encounters joined to their outcomes by encounter_id (inner: unlabelled rows dropped)."""
    merged = encounters.merge(labels, on="encounter_id", how="inner", validate="one_to_one")
    merged[LABEL_COLUMN] = merged[LABEL_COLUMN].astype("string")
    return merged


def load_labelled(artifacts_uri: str, batch: str) -> pd.DataFrame:
    """A processed batch with its outcomes, in the schema's dtypes."""
    encounters = data.parse_encounters(storage.read_bytes(paths(artifacts_uri, batch).processed))
    labels = read_labels(artifacts_uri, batch)
    if labels is None:
        raise LookupError(f"labels of {batch} have not arrived")
    return with_labels(encounters, labels)
