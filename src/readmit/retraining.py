"""Data for a challenger: cumulative labelled encounters and a recent, patient-disjoint holdout."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from readmit import data


@dataclass(frozen=True)
class RetrainingData:
    """What the challenger trains on and what both models are judged on."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    n_labelled_batches: int


def training_cohort(frame: pd.DataFrame, window: str, reference_fraction: float) -> pd.DataFrame:
    """The encounters a model of the given training window was trained from (before its split)."""
    cohort = data.exclude_died_or_hospice(frame)
    if window == "reference":
        cohort, _ = data.reference_and_batches(cohort, reference_fraction)
    return cohort


def assemble(
    base: pd.DataFrame,
    labelled: list[pd.DataFrame],
    *,
    recent_batches: int = 2,
    holdout_fraction: float = 0.5,
    seed: int = 42,
) -> RetrainingData:
    """Cumulative training data and a holdout of recent encounters of patients never trained on.

    The holdout is drawn, by patient, from the most recent labelled batches, among patients that
    are not in `base` (the champion's cohort): neither model has seen them, so the comparison is
    fair. Every encounter of a holdout patient is kept out of the challenger's training data.
    """
    if not labelled:
        raise ValueError("no labelled batches yet: nothing new to retrain on")
    batches = [data.exclude_died_or_hospice(b) for b in labelled]
    recent = pd.concat(batches[-recent_batches:], ignore_index=True)
    unseen = recent[~recent["patient_nbr"].isin(base["patient_nbr"])]
    _, holdout = data.split_by_patient(unseen, holdout_fraction, seed)
    everything = pd.concat([base, *batches], ignore_index=True)
    train = everything[~everything["patient_nbr"].isin(holdout["patient_nbr"])]
    return RetrainingData(data.in_time_order(train), holdout.reset_index(drop=True), len(labelled))
