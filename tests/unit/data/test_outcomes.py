"""The outcomes feed: validated, pseudonymised on arrival, reconciled with what is stored.

Every bad input ends in a clear count or a quarantine, nothing is lost, and the rest is stored."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from readmit import pseudonyms, storage
from readmit.data import outcomes, validation
from readmit.layout import StoreLayout

KEY = b"test-outcomes-key"


def _csv(rows: list[tuple[object, object]]) -> bytes:
    body = "encounter_id,readmitted\n" + "".join(f"{e},{r}\n" for e, r in rows)
    return body.encode()


def _stored(frame_rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(k, v, "2026-01-01T00:00:00+00:00") for k, v in frame_rows],
        columns=list(outcomes.STORED_COLUMNS),
    )


def test_reconcile_splits_new_repeated_and_contradicting_outcomes() -> None:
    incoming = _stored([("a", "NO"), ("b", "<30"), ("b", "<30"), ("c", ">30"), ("d", "NO"),
                        ("e", "<30"), ("e", "NO")])  # fmt: skip
    stored = _stored([("c", ">30"), ("d", "<30")])
    result = outcomes.reconcile(incoming, stored)
    assert result.accepted[pseudonyms.ENCOUNTER_KEY].tolist() == ["a", "b"]
    assert result.duplicates == 2  # b twice in the file, c already stored with the same outcome
    conflicts = result.conflicts.set_index(pseudonyms.ENCOUNTER_KEY)
    assert sorted(conflicts.index) == ["d", "e", "e"]  # stored d stands; torn e stores neither
    assert conflicts.loc["d", outcomes.STORED_LABEL] == "<30"
    assert conflicts.loc["e", outcomes.STORED_LABEL].isna().all()


def test_add_outcomes_stores_pseudonyms_counts_and_keeps_conflicts(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    served = {pseudonyms.pseudonym(KEY, "encounter_id", 101)}
    first = outcomes.add_outcomes(
        _csv([(101, "<30"), (102, "NO"), (102, "NO")]),
        source="feed-1.csv", artifacts_uri=store, key=KEY, served_keys=served,
    )  # fmt: skip
    assert (first.n_rows, first.accepted, first.duplicates, first.conflicts) == (3, 2, 1, 0)
    assert first.unknown_encounters == 1  # 102 was never served: stored all the same
    second = outcomes.add_outcomes(
        _csv([(101, "NO"), (103, ">30")]), source="feed-2.csv", artifacts_uri=store, key=KEY
    )
    assert (second.accepted, second.conflicts, second.unknown_encounters) == (1, 1, None)
    stored = outcomes.read_received(store)
    by_key = dict(zip(stored[pseudonyms.ENCOUNTER_KEY], stored["readmitted"], strict=True))
    assert by_key[pseudonyms.pseudonym(KEY, "encounter_id", 101)] == "<30"  # the first stands
    assert len(by_key) == 3
    for url in storage.list_files(f"{store}/outcomes", "*/*"):
        text = gzip.decompress(Path(url).read_bytes()) if url.endswith(".gz") else None
        text = text if text is not None else Path(url).read_bytes()
        assert b"encounter_id" not in text and b",101," not in text and b"101\n" not in text, url
    assert second.conflicts_uri is not None and storage.exists(second.conflicts_uri)
    assert storage.read_json(second.report_uri)["conflicts"] == 1
    assert "1 conflicting" in second.summary()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (_csv([(101, "maybe")]), "readmitted"),
        (b"encounter_id\n101\n", "expected its 2 columns: encounter_id, readmitted"),
        (_csv([(-3, "NO")]), "encounter_id"),
        (b"\x00\x01binary", "binary"),
    ],
)
def test_an_invalid_outcomes_file_is_quarantined_and_nothing_is_stored(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    store = str(tmp_path / "store")
    with pytest.raises(validation.ValidationFailed) as caught:
        outcomes.add_outcomes(content, source="bad.csv", artifacts_uri=store, key=KEY)
    assert problem in str(caught.value)
    assert storage.exists(f"{caught.value.quarantine_uri}/report.json")
    assert len(outcomes.read_received(store)) == 0


def test_drop_folder_lists_csv_files_in_name_order(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    inbox = StoreLayout(store).outcomes_inbox()
    for name in ("b.csv.gz", "a.csv", "notes.txt"):
        storage.write_bytes(f"{inbox}/{name}", b"x")
    assert [u.rsplit("/", 1)[-1] for u in outcomes.pending_drops(store)] == ["a.csv", "b.csv.gz"]
    assert outcomes.source_name("s3://b/outcomes 2024-01.csv.gz") == "outcomes_2024-01"


def test_monitoring_can_tell_that_outcomes_arrived(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    assert outcomes.newest_received(store) is None
    report = outcomes.add_outcomes(_csv([(7, "NO")]), source="a.csv", artifacts_uri=store, key=KEY)
    assert report.stored_uri is not None
    assert outcomes.newest_received(store) == report.stored_uri.rsplit("/", 1)[-1]
