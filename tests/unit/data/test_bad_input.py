"""Bad batches end in a clear error naming the problem AND a quarantined copy with its reports."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from readmit import data, storage
from readmit.data import validation


@pytest.fixture(scope="module")
def good(sample_frame: pd.DataFrame) -> pd.DataFrame:
    """500 real encounters that pass the suite on their own."""
    return sample_frame.head(500).reset_index(drop=True)


def _drop_column(frame: pd.DataFrame) -> bytes:
    return data.to_csv_bytes(frame.drop(columns=["num_procedures"]))


def _unknown_category(frame: pd.DataFrame) -> bytes:
    bad = frame.copy()
    bad.loc[[3, 7, 11], "race"] = "Martian"
    return data.to_csv_bytes(bad)


def _negative_count(frame: pd.DataFrame) -> bytes:
    bad = frame.copy()
    bad.loc[[2, 9], "number_emergency"] = -1
    return data.to_csv_bytes(bad)


def _label_outside_set(frame: pd.DataFrame) -> bytes:
    bad = frame.copy()
    bad.loc[4, "readmitted"] = "maybe"
    return data.to_csv_bytes(bad)


def _non_integer_count(frame: pd.DataFrame) -> bytes:
    bad = frame.astype({"num_medications": "object"})
    bad.loc[5, "num_medications"] = "twelve"
    bad.loc[6, "num_medications"] = "2.5"
    return data.to_csv_bytes(bad)


def _empty(frame: pd.DataFrame) -> bytes:
    return b""


def _png(frame: pd.DataFrame) -> bytes:
    return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10" + bytes(range(64))


CASES: dict[str, tuple[Callable[[pd.DataFrame], bytes], str, str | None, str]] = {
    # name: (make bytes, expectation, column, pattern the message must contain)
    "missing_column": (
        _drop_column,
        "table_columns_to_match_set",
        None,
        r"missing columns \['num_procedures'\]",
    ),
    "unknown_category": (
        _unknown_category,
        "column_values_to_be_in_set",
        "race",
        r"race: unexpected values \['Martian'\] \(3 rows\)",
    ),
    "negative_count": (
        _negative_count,
        "column_values_to_be_between",
        "number_emergency",
        r"number_emergency: 2 values outside \[0, 200\]",
    ),
    "label_outside_set": (
        _label_outside_set,
        "column_values_to_be_in_set",
        "readmitted",
        r"readmitted: unexpected values \['maybe'\] \(1 row\)",
    ),
    "non_integer_count": (
        _non_integer_count,
        "column_values_to_not_be_null",
        "num_medications",
        r"num_medications: 2 rows missing or not an integer",
    ),
    "empty_file": (_empty, "readable_csv", None, r"the file is empty"),
    "not_csv": (_png, "readable_csv", None, r"the file is binary"),
}


def test_the_good_batch_passes(good):
    frame = validation.validate_or_quarantine(
        data.to_csv_bytes(good), artifacts_uri="/nonexistent", batch_name="good"
    )
    assert len(frame) == len(good)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_batch_is_rejected_with_a_clear_error_and_quarantined(case, good, tmp_path: Path):
    make, expectation, column, pattern = CASES[case]
    content = make(good)
    artifacts = str(tmp_path / "artifacts")

    with pytest.raises(validation.ValidationFailed) as caught:
        validation.validate_or_quarantine(content, artifacts_uri=artifacts, batch_name=case)

    exc = caught.value
    message = str(exc)
    assert re.search(pattern, message), message
    assert exc.quarantine_uri in message
    assert "\n" not in message  # one paragraph, no traceback
    assert any(
        f["expectation"] == expectation and f["column"] == column for f in exc.result.failures
    ), exc.result.failures

    # Quarantined: <artifacts>/quarantine/<UTC stamp>-<batch>/ with the original bytes and reports.
    folders = storage.list_files(f"{artifacts}/quarantine")
    assert folders == [exc.quarantine_uri]
    assert re.fullmatch(r".*/quarantine/\d{8}T\d{6}Z-" + case, exc.quarantine_uri)
    assert storage.read_bytes(f"{exc.quarantine_uri}/original.csv") == content
    report = storage.read_json(f"{exc.quarantine_uri}/report.json")
    assert report["success"] is False
    assert report["failures"] == exc.result.failures
    page = storage.read_bytes(f"{exc.quarantine_uri}/report.html").decode()
    assert "FAILED" in page
    assert not re.search(r"(src|href)\s*=\s*[\"']?https?://", page)


def test_quarantine_keeps_the_raw_gzip_file_when_given(good, tmp_path: Path):
    content = _unknown_category(good)
    raw = gzip.compress(content)
    with pytest.raises(validation.ValidationFailed) as caught:
        validation.validate_or_quarantine(
            content, artifacts_uri=str(tmp_path), batch_name="gz", raw=raw
        )
    folder = caught.value.quarantine_uri
    assert storage.read_bytes(f"{folder}/original.csv.gz") == raw
    # The same batch rejected again (within the same second) does not overwrite the first copy.
    again = validation.quarantine(
        raw, caught.value.result, artifacts_uri=str(tmp_path), batch_name="gz"
    )
    assert again != folder and len(storage.list_files(f"{tmp_path}/quarantine")) == 2


def test_identifiers_never_reach_failures_or_reports(good, tmp_path: Path):
    bad = good.copy()
    bad.loc[1, "encounter_id"] = bad.loc[0, "encounter_id"]  # duplicate id
    bad.loc[2, "patient_nbr"] = -987654321  # out of range id
    with pytest.raises(validation.ValidationFailed) as caught:
        validation.validate_or_quarantine(
            data.to_csv_bytes(bad), artifacts_uri=str(tmp_path), batch_name="ids"
        )
    exc = caught.value
    message = str(exc)
    assert "encounter_id: 2 rows share a duplicated value" in message
    assert "patient_nbr: 1 values outside [1, inf]" in message
    report = json.dumps(exc.result.to_dict()) + message
    report += storage.read_bytes(f"{exc.quarantine_uri}/report.html").decode()
    for value in (str(int(bad.loc[0, "encounter_id"])), "987654321"):
        assert value not in report
