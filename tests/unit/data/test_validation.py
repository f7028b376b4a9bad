"""The GX suite: derived from the schema, passes the shipped data, fails specifically."""

from __future__ import annotations

import json
import pickle
import re

import pandas as pd
import pytest

from readmit import data
from readmit.data import validation
from readmit.reports.page import BASE_CSS
from readmit.schema import COLUMNS, LABEL_COLUMN, MEDICATIONS, RAW_COLUMNS, Kind


def _by(result: validation.ValidationResult, column: str | None) -> list[dict]:
    return [f for f in result.failures if f["column"] == column]


def test_the_full_shipped_data_passes_in_a_few_seconds(full_frame):
    result = validation.validate_frame(full_frame)
    assert result.success, result.failures
    assert result.n_rows == 101_766
    assert result.n_expectations == len(validation.build_expectations(True))
    assert result.duration_s < 30  # ~3-4 s measured on 2 busy cores; generous for CI
    json.dumps(result.to_dict())  # serialisable


def test_suite_is_derived_from_the_schema():
    by_type: dict[str, dict[str, dict]] = {}
    for e in validation.build_expectations(True):
        config = e.configuration.to_json_dict()
        by_type.setdefault(config["type"], {})[config["kwargs"].get("column")] = config["kwargs"]
    in_set = by_type["expect_column_values_to_be_in_set"]
    for column in COLUMNS:
        if column.values is not None:
            assert in_set[column.name]["value_set"] == list(column.values)
    assert set(MEDICATIONS) <= set(in_set)
    between = by_type["expect_column_values_to_be_between"]
    assert between["num_procedures"]["min_value"] == 0
    assert between["num_procedures"]["max_value"] == 50
    assert "diag_1" in by_type["expect_column_values_to_match_regex"]
    assert list(by_type["expect_column_values_to_be_unique"]) == ["encounter_id"]
    assert by_type["expect_table_columns_to_match_set"][None]["column_set"] == list(RAW_COLUMNS)
    not_null = by_type["expect_column_values_to_not_be_null"]
    assert "mostly" not in not_null["gender"] or not_null["gender"]["mostly"] in (None, 1)
    assert not_null["race"]["mostly"] == pytest.approx(0.9)
    assert "weight" not in not_null  # may be entirely missing
    types = by_type["expect_column_values_to_be_in_type_list"]
    assert types["num_procedures"]["type_list"] == ["Int64Dtype"]
    assert types["race"]["type_list"] == ["StringDtype"]
    scoring = validation.build_expectations(False)
    scoring_columns = scoring[0].configuration.kwargs["column_set"]
    assert LABEL_COLUMN not in scoring_columns
    assert all(e.configuration.kwargs.get("column") != LABEL_COLUMN for e in scoring)


def test_committed_suite_json_matches_the_builder():
    for suite in validation.SUITES:
        committed = json.loads((validation.SUITE_DIR / f"{suite.name}_suite.json").read_text())
        assert committed == json.loads(json.dumps(validation.suite_json(suite))), (
            "validations/ is stale: run readmit.data.validation.write_suite_json()"
        )


def test_real_sample_passes_and_reports_every_check(sample_frame):
    result = validation.validate_frame(sample_frame)
    assert result.success, result.failures
    assert result.n_expectations == len(result.checks)
    assert {c["column"] for c in result.checks} >= set(RAW_COLUMNS)


def test_failures_are_specific(sample_frame):
    bad = sample_frame.head(400).copy()
    bad.loc[[0, 1, 2], "race"] = "Martian"
    bad.loc[[3, 4], "num_procedures"] = 51
    bad.loc[5, "diag_1"] = "not-a-code"
    bad.loc[6, "admission_type_id"] = 99
    bad["number_diagnoses"] = bad["number_diagnoses"].astype("float64")
    result = validation.validate_frame(bad)
    assert not result.success
    details = {(f["column"], f["expectation"]): f["detail"] for f in result.failures}
    assert details[("race", "column_values_to_be_in_set")] == (
        "unexpected values ['Martian'] (3 rows)"
    )
    assert details[("num_procedures", "column_values_to_be_between")].startswith(
        "2 values outside [0, 50]"
    )
    assert "'not-a-code'" in details[("diag_1", "column_values_to_match_regex")]
    assert "[99]" in details[("admission_type_id", "column_values_to_be_in_set")]
    assert details[("number_diagnoses", "column_values_to_be_in_type_list")].startswith(
        "column type is float64"
    )
    assert len(result.failures) == 5


def test_missing_share_above_tolerance_fails_and_below_passes(sample_frame):
    frame = sample_frame.head(400).copy()
    frame.loc[:59, "race"] = pd.NA  # 15% > tolerated 10%
    failures = _by(validation.validate_frame(frame), "race")
    assert len(failures) == 1
    assert re.search(
        r"1\d\.\d% of values are missing .* above the tolerated 10%", failures[0]["detail"]
    )
    frame = sample_frame.head(400).copy()
    frame.loc[:19, "race"] = pd.NA  # 5%
    assert validation.validate_frame(frame).success


def test_tiny_batches_are_not_judged_on_missing_shares(sample_frame):
    one = sample_frame.head(1).copy()
    one["race"] = pd.Series([pd.NA], dtype="string")
    assert validation.validate_frame(one).success
    one["gender"] = pd.Series([pd.NA], dtype="string")  # required, whatever the size
    assert [f["column"] for f in validation.validate_frame(one).failures] == ["gender"]


def test_absent_and_extra_columns_are_named_once_not_per_check(sample_frame):
    frame = sample_frame.head(300).drop(columns=["age", "metformin"]).assign(colour="blue")
    result = validation.validate_frame(frame)
    assert [f["expectation"] for f in result.failures] == ["table_columns_to_match_set"]
    detail = result.failures[0]["detail"]
    assert detail == "missing columns ['age', 'metformin']; unexpected columns ['colour']"


def test_scoring_batch_without_label_passes_only_when_label_not_required(sample_frame):
    frame = sample_frame.head(300).drop(columns=[LABEL_COLUMN])
    assert validation.validate_frame(frame, require_label=False).success
    strict = validation.validate_frame(frame)
    assert "missing columns ['readmitted']" in strict.failures[0]["detail"]
    # A label may still come along with a scoring batch, and is then still checked.
    labelled = sample_frame.head(300).copy()
    labelled.loc[0, LABEL_COLUMN] = "soon"
    failures = validation.validate_frame(labelled, require_label=False).failures
    assert [f["column"] for f in failures] == [LABEL_COLUMN]


def test_validate_bytes_parses_and_turns_format_errors_into_failures(sample_frame):
    frame, result = validation.validate_bytes(data.to_csv_bytes(sample_frame.head(250)))
    assert result.success and frame is not None and len(frame) == 250
    frame, result = validation.validate_bytes(b"a;b;c\n1;2;3\n")
    assert frame is None and not result.success
    assert result.failures[0]["expectation"] == "readable_csv"
    assert result.failures[0]["column"] is None
    assert "comma-separated" in result.failures[0]["detail"]


def test_empty_table_fails_row_count(sample_frame):
    result = validation.validate_frame(sample_frame.head(0))
    assert [f["expectation"] for f in result.failures] == ["table_row_count_to_be_between"]


def test_html_report_is_self_contained_and_escaped():
    result = validation.ValidationResult(
        success=False,
        n_rows=3,
        n_expectations=2,
        failures=[{"expectation": "x", "column": "race", "detail": "unexpected values ['<b>']"}],
        duration_s=0.1,
        checks=[
            {"expectation": "x", "column": "race", "success": False},
            {"expectation": "y", "column": "age", "success": True},
        ],
    )
    page = validation.render_report_html(result, "Validation: <batch>")
    assert page.startswith("<!DOCTYPE html>")
    assert "FAILED" in page and "&lt;b&gt;" in page and "<b>" not in page
    assert "&lt;batch&gt;" in page
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page
    assert page.index("unexpected values") < page.index("All checked expectations")
    assert BASE_CSS in page  # the one page shell of every report


def test_error_message_caps_the_list():
    failures = [
        {"expectation": "column_values_to_be_in_set", "column": f"c{i}", "detail": f"bad {i}"}
        for i in range(13)
    ]
    result = validation.ValidationResult(False, 10, 100, failures, 0.1)
    message = str(validation.ValidationFailed(result, "s3://bucket/quarantine/x"))
    assert "c0: bad 0" in message and "c9: bad 9" in message and "c10" not in message
    assert "and 3 more" in message
    assert "quarantined at s3://bucket/quarantine/x" in message
    again = pickle.loads(pickle.dumps(validation.ValidationFailed(result, "s3://q")))
    assert again.result == result and again.quarantine_uri == "s3://q"


def test_every_schema_kind_is_covered():
    checked = {e.configuration.kwargs.get("column") for e in validation.build_expectations(True)}
    assert checked >= {c.name for c in COLUMNS if c.kind is not Kind.LABEL} | {LABEL_COLUMN}
