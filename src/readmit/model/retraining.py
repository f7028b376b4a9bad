"""Data for a challenger: cumulative labelled encounters and a recent, patient-disjoint holdout.

Labelled encounters come from production: served encounters whose outcomes have matured
(`production_batches`: the service's prediction log joined to the outcomes feed), and labelled
inbox batches. Everything is keyed (`pseudonyms`): served rows only ever had pseudonyms, so the
champion's training rows and inbox batches are keyed too, and patients are grouped by
`patient_key`. Rows stay in time order (the champion's data by encounter_id, then what arrived
after it), which is the order the patient-history store learns from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pandas as pd

from readmit import data, pseudonyms
from readmit.data.outcomes import RECEIVED_AT
from readmit.pseudonyms import ENCOUNTER_KEY, KEY_COLUMNS, patient_groups
from readmit.schema import INPUT_COLUMNS, LABEL_COLUMN

TIME_COLUMN = "timestamp"

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


def training_base(metadata: Mapping[str, Any], default_uri: str) -> dict[str, Any]:
    """What a challenger's data starts from: the training data of the first model of its chain.

    A trained model is its own base (its data URI, window and holdout fraction); a retrained
    one carries its chain's base as `base` (its own data is "cumulative": the base plus every
    labelled batch and matured served window, which the next retraining gathers again). A
    retrained model registered before `base` was recorded falls back to the settings' data.
    """
    if metadata.get("base"):
        return dict(metadata["base"])
    uri = (metadata.get("data") or {}).get("uri")
    if not uri or uri == "cumulative":
        return {"uri": default_uri, "training_window": "reference", "holdout_fraction": 0.2}
    return {
        "uri": uri,
        "training_window": metadata.get("training_window", "reference"),
        "holdout_fraction": metadata.get("holdout_fraction") or 0.2,
    }


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


def keyed(frame: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """A frame in time order with its raw identifiers replaced by pseudonyms (served rows,
    already keyed, pass unchanged)."""
    return pseudonyms.drop_raw_ids(data.in_time_order(frame), key)


def production_batches(
    served: pd.DataFrame, outcomes: pd.DataFrame, window: timedelta
) -> list[pd.DataFrame]:
    """Served encounters whose outcome has matured, as training rows (pseudonyms, the inputs the
    service scored, the outcome), one frame per time window in time order.

    Each encounter counts once (its latest prediction); an outcome received before the
    encounter was served is not its outcome and is left out (as monitoring does).
    """
    if served.empty or outcomes.empty:
        return []
    rows = served.sort_values(TIME_COLUMN, kind="stable").drop_duplicates(
        ENCOUNTER_KEY, keep="last"
    )
    joined = rows.merge(outcomes[[ENCOUNTER_KEY, LABEL_COLUMN, RECEIVED_AT]], on=ENCOUNTER_KEY)
    received = pd.to_datetime(joined[RECEIVED_AT], utc=True, format="ISO8601")
    matured = joined[received > joined[TIME_COLUMN]]
    columns = [*KEY_COLUMNS, *INPUT_COLUMNS, LABEL_COLUMN]
    starts = matured[TIME_COLUMN].dt.floor(pd.Timedelta(window))
    return [
        data.coerce_types(group[columns].reset_index(drop=True))
        for _, group in matured.groupby(starts, sort=True)
    ]


def assemble(
    base: pd.DataFrame,
    labelled: list[pd.DataFrame],
    *,
    key: bytes,
    recent_batches: int = 2,
    holdout_fraction: float = 0.5,
    seed: int = 42,
) -> RetrainingData:
    """Cumulative training data and a holdout of recent encounters of patients never trained on.

    `labelled` are batches in time order (served windows with matured outcomes, labelled inbox
    batches). The holdout is drawn, by patient, from the most recent ones, among patients that
    are not in `base` (the champion's training data): neither model has seen them, so the
    comparison is fair. Every encounter of a holdout patient is kept out of the challenger's
    training data. Everything is keyed with `key` first (see the module docstring).
    """
    if not labelled:
        raise ValueError("no labelled batches yet: nothing new to retrain on")
    base = keyed(base, key)
    batches = [keyed(b, key) for b in labelled]
    recent_feed = pd.concat(batches[-recent_batches:], ignore_index=True)
    recent = recent_feed[data.in_cohort(recent_feed)]
    unseen = recent[~patient_groups(recent).isin(patient_groups(base))]
    if unseen.empty:
        raise ValueError(
            "the recent labelled batches hold no patient the champion was not trained on: "
            "no fair holdout; wait for more batches"
        )
    _, holdout = data.split_by_patient(unseen, holdout_fraction, seed)
    everything = pd.concat([base, *batches], ignore_index=True)
    held_out = patient_groups(everything).isin(patient_groups(holdout))
    holdout_feed = recent_feed[patient_groups(recent_feed).isin(patient_groups(holdout))]
    return RetrainingData(
        everything[~held_out].reset_index(drop=True),
        holdout_feed.reset_index(drop=True),
        len(labelled),
    )
