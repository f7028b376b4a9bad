"""The per-record scorer equals the batch pipeline on real rows (train/serve parity)."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import pytest

from readmit import data, pseudonyms
from readmit.model import train
from readmit.schema import INPUT_COLUMNS
from readmit.serving import fastpath

KEY = b"fp"


def records_of(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as a hospital system sends them (field names as in the data set, None = missing),
    pseudonymised on arrival as the service does."""
    return [
        pseudonyms.pseudonymise_record(
            {k: (None if v is pd.NA else v) for k, v in row.items()}, KEY
        )
        for row in frame.to_dict(orient="records")
    ]


@pytest.fixture(scope="module")
def fitted(sample_frame: pd.DataFrame) -> tuple[train.TrainingResult, pd.DataFrame, pd.DataFrame]:
    cohort = data.exclude_died_or_hospice(sample_frame)
    train_frame, holdout = data.split_by_patient(cohort, 0.2, seed=42)
    result = train.train_models(train_frame, search_budget_s=1.0, n_iter=2, pseudonym_key=KEY)
    return result, train_frame, holdout


def _batch(model: Any, frame: pd.DataFrame) -> np.ndarray:
    return np.asarray(model.predict_proba(pseudonyms.add_keys(frame, KEY)))[:, 1]


def test_parity_with_the_batch_pipeline_on_real_rows(fitted) -> None:
    result, train_frame, holdout = fitted
    scorer = fastpath.compile_scorer(result.model)
    rows = pd.concat([holdout.head(300), train_frame.tail(100)], ignore_index=True)
    expected = _batch(result.model, rows)
    np.testing.assert_allclose(scorer.predict_proba_many(records_of(rows)), expected, atol=1e-9)
    # One record at a time: history comes from the store only, as for a lone request; the
    # batch pipeline agrees when it is also given one row at a time.
    for i in (0, 5, 150, 350):
        lone = rows.iloc[[i]]
        assert scorer.predict_proba_one(records_of(lone)[0]) == pytest.approx(
            _batch(result.model, lone)[0], abs=1e-9
        )
    assert len(np.unique(expected.round(6))) > 50  # real, varied probabilities


def test_history_matters_and_matches_for_repeat_patients(fitted) -> None:
    result, train_frame, _ = fitted
    counts = train_frame["patient_nbr"].value_counts()
    repeat = train_frame[train_frame["patient_nbr"].isin(counts[counts >= 3].index)]
    scorer = fastpath.compile_scorer(result.model)
    with_ids = scorer.predict_proba_many(records_of(repeat))
    np.testing.assert_allclose(with_ids, _batch(result.model, repeat), atol=1e-9)
    anonymous = repeat.drop(columns=["patient_nbr", "encounter_id", "readmitted"])
    without = scorer.predict_proba_many(records_of(anonymous))
    np.testing.assert_allclose(without, _batch(result.model, anonymous), atol=1e-9)
    assert not np.allclose(with_ids, without)  # history changes the scores of repeat patients


def test_baseline_compiles_too(fitted) -> None:
    result, _, holdout = fitted
    scorer = fastpath.compile_scorer(result.baseline)
    rows = holdout.head(100)
    np.testing.assert_allclose(
        scorer.predict_proba_many(records_of(rows)), _batch(result.baseline, rows), atol=1e-9
    )


def test_record_shapes_and_errors(fitted) -> None:
    result, _, holdout = fitted
    scorer = fastpath.compile_scorer(result.model)
    record = {k: v for k, v in records_of(holdout.head(1))[0].items() if k in INPUT_COLUMNS}
    assert "glyburide-metformin" in record  # hyphenated data-set names
    p = scorer.predict_proba_one(record)
    as_floats = {k: float(v) if isinstance(v, int) else v for k, v in record.items()}
    assert scorer.predict_proba_one(as_floats) == p  # 1.0 and 1 are the same coded id
    optional_dropped = {k: v for k, v in record.items() if k not in ("weight", "payer_code")}
    assert 0 < scorer.predict_proba_one(optional_dropped) < 1
    with pytest.raises(ValueError, match="num_lab_procedures"):
        scorer.predict_proba_one({k: v for k, v in record.items() if k != "num_lab_procedures"})
    assert scorer.predict_proba_many([]).shape == (0,)
    with pytest.raises(TypeError, match="ReadmissionModel"):
        fastpath.compile_scorer(result.model.steps[-1][1])


def test_single_record_is_fast(fitted) -> None:
    result, _, holdout = fitted
    scorer = fastpath.compile_scorer(result.model)
    record = records_of(holdout.head(1))[0]
    timings = []
    for _ in range(60):
        start = time.perf_counter()
        scorer.predict_proba_one(record)
        timings.append(time.perf_counter() - start)
    assert np.median(timings[10:]) < 0.005  # ~0.3 ms typical; generous for a shared machine
