"""whylogs profiles: no identifiers, exact counts, storage round trips, merging, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest
from whylogs.api import usage_stats

from readmit import storage
from readmit.data import coerce_types
from readmit.monitoring import profiling


def _frame() -> pd.DataFrame:
    raw = pd.DataFrame(
        {
            "encounter_id": ["11", "12", "13", "14"],
            "patient_nbr": ["901", "902", "901", "903"],
            "age": ["[70-80)", "[70-80)", "[50-60)", None],
            "payer_code": ["MC", None, None, "BC"],
            "time_in_hospital": ["3", "5", "1", "14"],
            "diag_1": ["250.83", "V57", "428", "E909"],
            "readmitted": ["NO", "<30", ">30", "NO"],
        }
    )
    return coerce_types(raw)


def _frequent(view, column: str) -> dict[str, int]:
    metric = view.get_column(column).get_metric("frequent_items")
    return {item.value: int(item.est) for item in metric.to_summary_dict()["frequent_strings"]}


def test_profile_drops_identifiers_and_counts_exactly() -> None:
    view = profiling.profile_frame(_frame())
    columns = set(view.get_columns())
    assert columns == {"age", "payer_code", "time_in_hospital", "diag_1", "readmitted"}
    assert not columns & {"encounter_id", "patient_nbr"}
    assert profiling.profile_rows(view) == 4
    payer = view.get_column("payer_code").to_summary_dict()
    assert (payer["counts/n"], payer["counts/null"]) == (4, 2)
    assert _frequent(view, "age") == {"[70-80)": 2, "[50-60)": 1}
    stay = view.get_column("time_in_hospital").to_summary_dict()
    assert (stay["distribution/min"], stay["distribution/max"]) == (1.0, 14.0)


def test_profiling_turns_whylogs_telemetry_off() -> None:
    profiling.profile_frame(_frame())
    assert usage_stats._TELEMETRY_DISABLED is True


@pytest.mark.parametrize("scheme", ["local", "file", "memory"])
def test_write_and_read_round_trip(tmp_path, scheme: str) -> None:
    urls = {
        "local": str(tmp_path / "a" / "profile.bin"),
        "file": f"file://{tmp_path}/b/profile.bin",
        "memory": "memory://readmit-test/profiles/profile.bin",
    }
    view = profiling.profile_frame(_frame())
    url = profiling.write_profile(view, urls[scheme])
    assert url == urls[scheme]
    back = profiling.read_profile(url)
    assert set(back.get_columns()) == set(view.get_columns())
    assert _frequent(back, "readmitted") == {"NO": 2, "<30": 1, ">30": 1}


def test_merge_adds_counts() -> None:
    frame = _frame()
    parts = [profiling.profile_frame(frame.iloc[:1]), profiling.profile_frame(frame.iloc[1:])]
    merged = profiling.merge_profiles(parts)
    assert profiling.profile_rows(merged) == 4
    assert _frequent(merged, "age") == _frequent(profiling.profile_frame(frame), "age")


def test_merge_of_nothing_is_a_clear_error() -> None:
    with pytest.raises(profiling.ProfileError, match="no profiles"):
        profiling.merge_profiles([])


def test_reading_something_else_names_the_file(tmp_path) -> None:
    url = storage.write_bytes(str(tmp_path / "not-a-profile.bin"), b"encounter_id,age\n1,2\n")
    with pytest.raises(profiling.ProfileError, match=r"not-a-profile\.bin: not a whylogs profile"):
        profiling.read_profile(url)
    with pytest.raises(profiling.ProfileError, match="empty"):
        profiling.deserialize_profile(b"")


def test_prediction_profile_has_one_numeric_column() -> None:
    view = profiling.profile_predictions([0.1, 0.2, 0.3, 0.9])
    assert list(view.get_columns()) == [profiling.PREDICTION_COLUMN]
    summary = view.get_column(profiling.PREDICTION_COLUMN).to_summary_dict()
    assert summary["distribution/n"] == 4
    assert summary["distribution/max"] == pytest.approx(0.9)


def test_empty_frame_gives_an_empty_profile() -> None:
    view = profiling.profile_frame(_frame().iloc[:0])
    assert profiling.profile_rows(view) == 0
