"""The data contract: one definition drives dtypes and the request model."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from readmit.schema import (
    COLUMN_BY_NAME,
    INPUT_COLUMNS,
    MEDICATIONS,
    RAW_COLUMNS,
    encounter_model,
)


def _record(frame: pd.DataFrame, i: int = 0) -> dict:
    row = frame.iloc[i]
    return {c: (None if pd.isna(row[c]) else row[c]) for c in INPUT_COLUMNS}


def test_every_real_row_is_a_valid_request(sample_frame):
    model = encounter_model()
    for i in range(0, len(sample_frame), 97):
        model.model_validate(_record(sample_frame, i))


def test_request_uses_data_set_names_and_rejects_identifiers_as_unknown(sample_frame):
    record = _record(sample_frame)
    parsed = encounter_model().model_validate(record)
    assert set(parsed.model_dump(by_alias=True)) == set(INPUT_COLUMNS)
    assert "glyburide-metformin" in parsed.model_dump(by_alias=True)
    with pytest.raises(ValidationError, match="extra"):
        encounter_model().model_validate({**record, "readmitted": "NO"})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("race", "Martian"),
        ("num_procedures", -1),
        ("time_in_hospital", 15),
        ("diag_1", "not-a-code"),
        ("admission_source_id", 16),
        ("metformin", "Sometimes"),
    ],
)
def test_request_rejects_values_outside_the_contract(sample_frame, field, value):
    with pytest.raises(ValidationError) as info:
        encounter_model().model_validate({**_record(sample_frame), field: value})
    assert field in str(info.value)


def test_nullable_fields_follow_missing_tolerance(sample_frame):
    record = _record(sample_frame)
    record["weight"] = None
    encounter_model().model_validate(record)
    record["age"] = None
    with pytest.raises(ValidationError, match="age"):
        encounter_model().model_validate(record)


def test_schema_covers_the_data_set_and_all_medications():
    assert len(RAW_COLUMNS) == 50
    assert len(MEDICATIONS) == 23
    assert all(COLUMN_BY_NAME[m].values == ("Down", "No", "Steady", "Up") for m in MEDICATIONS)
