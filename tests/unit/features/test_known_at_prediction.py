"""The one rule of what is known at prediction time, on production-shaped rows: an encounter's
probability never depends on outcome columns in the input, nor on other (later) rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from readmit import data, pseudonyms
from readmit.features import (
    EncounterFeatures,
    FeatureEncoder,
    OutcomeInInputError,
    PatientHistory,
    make_label,
)
from readmit.serving import scoring

KEY = b"known-at-prediction-key"


@pytest.fixture(scope="module")
def split(sample_frame: pd.DataFrame) -> data.FeedSplit:
    return data.split_feed(
        sample_frame, window="all", reference_fraction=0.6, holdout_fraction=0.3, seed=1
    )


@pytest.fixture(scope="module")
def model(split: data.FeedSplit) -> object:
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    train = split.train
    pipeline = Pipeline(
        [
            ("history", PatientHistory(pseudonyms.fingerprint(KEY))),
            ("features", EncounterFeatures()),
            ("encode", FeatureEncoder(min_frequency=20)),
            ("model", XGBClassifier(n_estimators=30, max_depth=3, n_jobs=1, random_state=0)),
        ]
    )
    return pipeline.fit(pseudonyms.add_keys(train, KEY), make_label(train))


def test_probability_does_not_depend_on_outcome_columns(
    model: object, split: data.FeedSplit
) -> None:
    """Training rows (known patients, stored history) and unknown ones: the pipeline gives the
    same probabilities with the outcome column, without it, and with other outcomes."""
    rows = pd.concat([split.train.head(300), split.holdout_feed.head(300)], ignore_index=True)
    rows = pseudonyms.add_keys(rows, KEY)
    with_outcomes = np.asarray(model.predict_proba(rows))[:, 1]  # type: ignore[attr-defined]
    without = rows.drop(columns=["readmitted"])
    flipped = rows.assign(readmitted=rows["readmitted"].map({"NO": "<30", "<30": "NO"}))
    for variant in (without, flipped):
        got = np.asarray(model.predict_proba(variant))[:, 1]  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got, with_outcomes)


def test_probability_does_not_depend_on_later_or_other_rows(
    model: object, split: data.FeedSplit
) -> None:
    feed = split.holdout_feed.drop(columns=["readmitted"])
    repeat = feed[feed["patient_nbr"].duplicated(keep=False)]
    assert len(repeat) > 20  # patients with several encounters in the input
    together = scoring.served_probabilities(model, feed, key=KEY)
    alone = np.asarray(
        [scoring.served_probabilities(model, feed.iloc[[i]], key=KEY)[0] for i in range(60)]
    )
    np.testing.assert_allclose(together[:60], alone, rtol=0, atol=1e-12)
    reversed_order = scoring.served_probabilities(model, feed.iloc[::-1], key=KEY)[::-1]
    np.testing.assert_allclose(together, reversed_order, rtol=0, atol=1e-12)
    keyed_feed = pseudonyms.add_keys(feed, KEY)
    frame_path = np.asarray(model.predict_proba(keyed_feed))[:, 1]  # type: ignore[attr-defined]
    np.testing.assert_allclose(together, frame_path, rtol=0, atol=1e-6)


def test_scoring_input_with_an_outcome_column_is_refused(
    model: object, split: data.FeedSplit
) -> None:
    with pytest.raises(OutcomeInInputError, match="outcomes feed"):
        scoring.served_probabilities(model, split.holdout_feed, key=KEY)


def test_a_model_keyed_with_another_key_is_refused(model: object, split: data.FeedSplit) -> None:
    """Another key would silently find no patient: the model is refused instead, by name."""
    feed = split.holdout_feed.drop(columns=["readmitted"]).head(5)
    with pytest.raises(pseudonyms.KeyMismatchError, match="READMIT_PSEUDONYM_KEY"):
        scoring.served_probabilities(model, feed, key=b"another-key")


def test_scorers_refuse_raw_identifiers(model: object, split: data.FeedSplit) -> None:
    records = scoring.feed_records(split.holdout_feed.drop(columns=["readmitted"]).head(2))
    for scorer in (scoring.make_scorer(model), scoring.FrameScorer(model)):
        with pytest.raises(ValueError, match="raw identifiers"):
            scorer.predict_proba_many(records)
