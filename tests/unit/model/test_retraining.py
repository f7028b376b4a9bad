"""Cumulative data and the fair holdout of the retraining flow."""

from __future__ import annotations

import pytest

from readmit import data
from readmit.model import retraining


def test_holdout_is_recent_unseen_patients_and_kept_out_of_training(full_frame):
    ordered = data.exclude_died_or_hospice(data.in_time_order(full_frame))
    base, later = ordered.iloc[:3000], ordered.iloc[3000:6000]
    batches = [later.iloc[i : i + 1000] for i in range(0, 3000, 1000)]
    result = retraining.assemble(base, batches, recent_batches=2, holdout_fraction=0.5, seed=1)
    holdout_patients = set(result.holdout["patient_nbr"])
    assert holdout_patients
    assert holdout_patients.isdisjoint(base["patient_nbr"])
    assert holdout_patients.isdisjoint(result.train["patient_nbr"])
    recent_ids = set(later.iloc[1000:]["encounter_id"])
    assert set(result.holdout["encounter_id"]) <= recent_ids
    # Everything else is used: base + all batches minus holdout patients' encounters.
    kept = len(base) + 3000 - ordered.iloc[:6000]["patient_nbr"].isin(holdout_patients).sum()
    assert len(result.train) == kept
    assert result.train["encounter_id"].is_monotonic_increasing


def test_no_labelled_batch_is_a_clear_error(sample_frame):
    with pytest.raises(ValueError, match="no labelled batches"):
        retraining.assemble(sample_frame, [])
