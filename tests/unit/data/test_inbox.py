"""Inbox, late labels and processed batches in the artifact store."""

from __future__ import annotations

import pandas as pd

from readmit import data
from readmit.data import inbox


def test_batch_round_trip_with_late_labels(tmp_path, sample_frame):
    root = str(tmp_path / "store")
    batch = sample_frame.head(200)
    features, labels = inbox.split_labels(batch)
    assert "readmitted" not in features and list(labels.columns) == ["encounter_id", "readmitted"]

    for i in (2, 1):
        inbox.publish_batch(root, inbox.batch_id(i), features)
    assert inbox.pending(root) == ["batch-0001", "batch-0002"]

    inbox.mark_processed(root, "batch-0001")
    assert inbox.pending(root) == ["batch-0002"]
    inbox.publish_batch(root, inbox.batch_id(3), features)
    inbox.discard(root, "batch-0003")  # quarantined elsewhere: leaves the inbox only
    assert inbox.pending(root) == ["batch-0002"]
    assert inbox.labelled_batches(root) == []  # labels have not arrived yet
    assert inbox.read_labels(root, "batch-0001") is None

    inbox.publish_labels(root, "batch-0001", labels)
    assert inbox.labelled_batches(root) == ["batch-0001"]
    again = inbox.load_labelled(root, "batch-0001")
    pd.testing.assert_frame_equal(
        again[batch.columns].reset_index(drop=True), data.coerce_types(batch).reset_index(drop=True)
    )


def test_join_drops_encounters_without_outcome(sample_frame):
    batch = sample_frame.head(10)
    features, labels = inbox.split_labels(batch)
    joined = inbox.with_labels(features, labels.head(6))
    assert len(joined) == 6
    assert joined["readmitted"].tolist() == batch["readmitted"].head(6).tolist()
