"""Data for a challenger: cumulative labelled encounters and a recent, patient-disjoint holdout."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from readmit import data

INPUT_VALIDATION = {
    "ran_in_this_run": False,
    "inputs": "the champion's training data was validated when the champion was trained; every "
    "labelled batch was validated by the monitoring flow when it arrived (an invalid batch is "
    "quarantined and never joined to its labels)",
}
"""What the challenger's lineage says about validation: retraining validates nothing itself."""


@dataclass(frozen=True)
class RetrainingData:
    """What the challenger trains on and what both models are judged on."""

    train_feed: pd.DataFrame
    holdout_feed: pd.DataFrame
    n_labelled_batches: int

    @property
    def train(self) -> pd.DataFrame:
        """Cohort rows the challenger is fitted on."""
        return data.exclude_died_or_hospice(self.train_feed)

    @property
    def holdout(self) -> pd.DataFrame:
        """Cohort rows both models are judged on."""
        return data.exclude_died_or_hospice(self.holdout_feed)


def champion_training_rows(
    frame: pd.DataFrame,
    window: str,
    reference_fraction: float,
    holdout_fraction: float,
    seed: int,
) -> pd.DataFrame:
    """The champion's training feed (raw rows of its training patients, every disposition):
    the training flow's split (`data.split_feed`), reproduced from the same parameters."""
    return data.split_feed(
        frame,
        window=window,
        reference_fraction=reference_fraction,
        holdout_fraction=holdout_fraction,
        seed=seed,
    ).train_feed


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
    if "patient_nbr" not in base:
        raise ValueError("the champion's training data has no patient_nbr")
    batches = list(labelled)
    recent_feed = pd.concat(batches[-recent_batches:], ignore_index=True)
    recent = recent_feed[data.in_cohort(recent_feed)]
    unseen = recent[~recent["patient_nbr"].isin(base["patient_nbr"])]
    if unseen.empty:
        raise ValueError(
            "the recent labelled batches hold no patient the champion was not trained on: "
            "no fair holdout; wait for more batches"
        )
    _, holdout = data.split_by_patient(unseen, holdout_fraction, seed)
    everything = pd.concat([base, *batches], ignore_index=True)
    held_out = everything["patient_nbr"].isin(holdout["patient_nbr"])
    holdout_feed = recent_feed[recent_feed["patient_nbr"].isin(holdout["patient_nbr"])]
    return RetrainingData(
        data.in_time_order(everything[~held_out]),
        holdout_feed.reset_index(drop=True),
        len(labelled),
    )
