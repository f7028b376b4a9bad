"""Cumulative data and the fair holdout of the retraining flow, from inbox batches and from
served encounters whose outcomes matured (keyed: no raw identifier reaches the challenger)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from readmit import data, pseudonyms
from readmit.model import retraining
from readmit.pseudonyms import ENCOUNTER_KEY, PATIENT_KEY
from readmit.schema import INPUT_COLUMNS

KEY = b"retraining-test-key"


def _key(values: pd.Series, column: str) -> pd.Series:
    return pseudonyms.key_column(values, KEY, column)


def test_holdout_is_recent_unseen_patients_and_kept_out_of_training(full_frame):
    ordered = data.exclude_died_or_hospice(data.in_time_order(full_frame))
    base, later = ordered.iloc[:3000], ordered.iloc[3000:6000]
    batches = [later.iloc[i : i + 1000] for i in range(0, 3000, 1000)]
    result = retraining.assemble(
        base, batches, key=KEY, recent_batches=2, holdout_fraction=0.5, seed=1
    )
    assert not {"patient_nbr", "encounter_id"} & set(result.train_feed.columns)
    holdout_patients = set(result.holdout[PATIENT_KEY])
    assert holdout_patients
    assert holdout_patients.isdisjoint(_key(base["patient_nbr"], "patient_nbr"))
    assert holdout_patients.isdisjoint(result.train[PATIENT_KEY])
    recent = set(_key(later.iloc[1000:]["encounter_id"], "encounter_id"))
    assert set(result.holdout[ENCOUNTER_KEY]) <= recent
    # Everything else is used: base + all batches minus holdout patients' encounters.
    first_6000 = _key(ordered.iloc[:6000]["patient_nbr"], "patient_nbr")
    assert len(result.train) == 6000 - first_6000.isin(holdout_patients).sum()
    keys = _key(ordered["encounter_id"], "encounter_id")
    position = dict(zip(keys, range(len(ordered)), strict=True))
    assert result.train[ENCOUNTER_KEY].map(position).is_monotonic_increasing  # time order kept


def test_no_labelled_batch_is_a_clear_error(sample_frame):
    with pytest.raises(ValueError, match="no labelled batches"):
        retraining.assemble(sample_frame, [], key=KEY)


def _served(frame: pd.DataFrame, start: datetime) -> pd.DataFrame:
    """Feed rows as the prediction log holds them: pseudonyms, inputs, probability, time."""
    out = pseudonyms.drop_raw_ids(frame.drop(columns=["readmitted"]), KEY)
    out["probability"] = 0.1
    out["timestamp"] = pd.to_datetime(
        [start + timedelta(minutes=i) for i in range(len(out))], utc=True
    )
    return out


def test_production_batches_are_served_encounters_with_matured_outcomes(full_frame):
    rows = data.in_time_order(full_frame).iloc[:600]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    served = _served(rows, t0)
    served = pd.concat([served, served.iloc[:5].assign(probability=0.2)])  # scored twice
    outcomes = pd.DataFrame({
        ENCOUNTER_KEY: _key(rows["encounter_id"], "encounter_id"),
        "readmitted": rows["readmitted"].astype(str),
        "received_at": (t0 + timedelta(days=60)).isoformat(),
    })  # fmt: skip
    outcomes.loc[10, "received_at"] = (t0 - timedelta(days=1)).isoformat()
    outcomes = outcomes.drop(index=range(500, 600))  # not matured yet
    batches = retraining.production_batches(served, outcomes, timedelta(hours=4))
    # 4-hour windows of 1-minute traffic; row 10's outcome came before it was served
    assert [len(b) for b in batches] == [239, 240, 20]
    together = pd.concat(batches)
    assert together[ENCOUNTER_KEY].is_unique and len(together) == 499
    assert set(together.columns) == {
        *pseudonyms.KEY_COLUMNS, *INPUT_COLUMNS, "readmitted"
    }  # fmt: skip
    expected = rows.set_index(_key(rows["encounter_id"], "encounter_id"))["readmitted"]
    got = together["readmitted"].to_numpy()
    assert (got == expected[together[ENCOUNTER_KEY]].to_numpy()).all()
    assert np.isin(outcomes.loc[10, ENCOUNTER_KEY], together[ENCOUNTER_KEY]).item() is False


def test_a_challenger_learns_from_raw_training_rows_and_keyed_served_rows(full_frame):
    ordered = data.in_time_order(full_frame)
    base, later = ordered.iloc[:3000], ordered.iloc[3000:5000]
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    served = _served(later, t0)
    outcomes = pd.DataFrame({
        ENCOUNTER_KEY: _key(later["encounter_id"], "encounter_id"),
        "readmitted": later["readmitted"].astype(str),
        "received_at": (t0 + timedelta(days=60)).isoformat(),
    })  # fmt: skip
    batches = retraining.production_batches(served, outcomes, timedelta(hours=8))
    result = retraining.assemble(base, batches, key=KEY, recent_batches=2, seed=3)
    assert len(result.train_feed) + len(result.holdout_feed) <= 5000
    assert set(result.holdout[ENCOUNTER_KEY]) <= set(pd.concat(batches[-2:])[ENCOUNTER_KEY])
    assert result.train_feed[PATIENT_KEY].notna().all()


def test_a_retrained_champion_is_retrained_from_its_chains_base():
    """A challenger's own data is "cumulative" (no file to read): it records its chain's base,
    so retraining after a retraining starts from the same training data as the first."""
    trained = {"data": {"uri": "s3://bucket/feed.csv"}, "training_window": "all",
               "holdout_fraction": 0.25}  # fmt: skip
    base = retraining.training_base(trained, "default.csv")
    assert base == {"uri": "s3://bucket/feed.csv", "training_window": "all",
                    "holdout_fraction": 0.25}  # fmt: skip
    retrained = {"data": {"uri": "cumulative"}, "training_window": "cumulative", "base": base}
    assert retraining.training_base(retrained, "default.csv") == base
    before_the_fix = {"data": {"uri": "cumulative"}, "training_window": "cumulative"}
    assert retraining.training_base(before_the_fix, "default.csv")["uri"] == "default.csv"
    assert retraining.training_base({}, "default.csv")["training_window"] == "reference"
