"""Loading, checksums, exclusions, patient-grouped splits and time batches."""

from __future__ import annotations

import gzip

import pandas as pd
import pytest

from readmit import data
from readmit.schema import DIED_OR_HOSPICE_IDS, RAW_COLUMNS

CSV = (
    b"encounter_id,patient_nbr,race,diag_1,max_glu_serum,num_procedures\r\n"
    b"3,10,?,250.83,None,2\r\n"
    b"1,11,Caucasian,V57,>200,abc\r\n"
    b"2,10,Asian,E909,Norm,1.5\r\n"
)


def test_parse_keeps_none_category_codes_as_strings_and_question_mark_as_missing():
    frame = data.parse_encounters(CSV)
    assert frame.loc[0, "max_glu_serum"] == "None"
    assert pd.isna(frame.loc[0, "race"])
    assert frame["diag_1"].tolist() == ["250.83", "V57", "E909"]
    assert str(frame["num_procedures"].dtype) == "Int64"
    # Not an integer -> missing, so the validation suite reports it by column.
    assert frame["num_procedures"].isna().tolist() == [False, True, True]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"   \n", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "binary"),
        (b"just one line of prose without commas\nmore prose", "not a comma-separated"),
    ],
)
def test_parse_rejects_what_is_not_a_csv_of_encounters(content, message):
    with pytest.raises(data.DataFormatError, match=message):
        data.parse_encounters(content)


def test_read_raw_checks_sha256_of_uncompressed_content(tmp_path):
    path = tmp_path / "batch.csv.gz"
    path.write_bytes(gzip.compress(CSV))
    file = data.read_raw(str(path), data.sha256_hex(CSV))
    assert file.content == CSV
    with pytest.raises(data.ChecksumError, match="does not match"):
        data.read_raw(str(path), "0" * 64)


def test_shipped_data_matches_readme_facts(full_frame):
    assert full_frame.shape == (101_766, 50)
    assert tuple(full_frame.columns) == RAW_COLUMNS
    assert full_frame["patient_nbr"].nunique() == 71_518
    assert full_frame["readmitted"].value_counts().to_dict() == {
        "NO": 54_864,
        ">30": 35_545,
        "<30": 11_357,
    }
    assert len(data.exclude_died_or_hospice(full_frame)) == 99_343


def test_exclusion_drops_only_died_or_hospice(sample_frame):
    kept = data.exclude_died_or_hospice(sample_frame)
    assert not kept["discharge_disposition_id"].isin(DIED_OR_HOSPICE_IDS).any()
    dropped = sample_frame["discharge_disposition_id"].isin(DIED_OR_HOSPICE_IDS).sum()
    assert len(kept) == len(sample_frame) - dropped


def test_split_by_patient_never_shares_a_patient(sample_frame):
    train, holdout = data.split_by_patient(sample_frame, 0.25, seed=1)
    assert set(train["patient_nbr"]).isdisjoint(holdout["patient_nbr"])
    assert len(train) + len(holdout) == len(sample_frame)
    assert 0.15 < len(holdout) / len(sample_frame) < 0.35


def test_reference_and_batches_are_time_ordered_and_complete(sample_frame):
    shuffled = sample_frame.sample(frac=1, random_state=0)
    reference, batches = data.reference_and_batches(shuffled, 0.5, batch_size=400)
    assert len(reference) == 1500
    assert [len(b) for b in batches] == [400, 400, 400, 300]
    ids = pd.concat([reference, *batches])["encounter_id"].tolist()
    assert ids == sorted(ids)
    assert reference["encounter_id"].max() < batches[0]["encounter_id"].min()
    with pytest.raises(ValueError, match="reference_fraction"):
        data.reference_and_batches(sample_frame, 1.0)


def test_csv_round_trip_preserves_values(sample_frame):
    again = data.parse_encounters(data.to_csv_bytes(sample_frame))
    pd.testing.assert_frame_equal(again, sample_frame)
