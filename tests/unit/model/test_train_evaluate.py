"""Training and evaluation: metric definitions on known inputs, gates, and a small real run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from readmit import data
from readmit.model import evaluate, train
from readmit.model.evaluate import (
    calibration_table,
    max_f1_threshold,
    threshold_metrics,
)


def test_threshold_metrics_count_the_confusion_matrix() -> None:
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.2, 0.6, 0.1, 0.05])
    m = threshold_metrics(y, p, 0.5)
    assert (m["sensitivity"], m["specificity"], m["ppv"], m["flagged_share"]) == (
        0.5, pytest.approx(2 / 3, abs=1e-6), 0.5, 0.4,
    )  # fmt: skip


def test_max_f1_threshold_separates_perfectly_separable_scores() -> None:
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.7, 0.8])
    t = max_f1_threshold(y, p)
    assert 0.3 < t <= 0.7
    assert threshold_metrics(y, p, t)["f1"] == 1.0


def test_calibration_table_bins_and_ece() -> None:
    y = np.array([0, 1] * 50)
    perfect = np.full(100, 0.5)
    table = calibration_table(y, perfect, n_bins=4)
    assert table["count"] == [25, 25, 25, 25]
    assert table["ece"] == pytest.approx(0.02, abs=1e-9)  # bins hold 12/13 positives of 25
    off = calibration_table(y, np.full(100, 0.9), n_bins=4)
    assert off["ece"] == pytest.approx(0.4, abs=0.03)


def test_grouped_folds_never_split_a_patient(sample_frame: pd.DataFrame) -> None:
    frame = data.exclude_died_or_hospice(sample_frame)
    y = np.asarray(frame["readmitted"].eq("<30"), dtype=int)
    for train_idx, valid_idx in train.grouped_folds(frame, y, 3, seed=0):
        patients = frame["patient_nbr"].to_numpy()
        assert not set(patients[train_idx]) & set(patients[valid_idx])


@pytest.fixture(scope="module")
def trained(sample_frame: pd.DataFrame) -> tuple[train.TrainingResult, pd.DataFrame]:
    cohort = data.exclude_died_or_hospice(sample_frame)
    train_frame, holdout = data.split_by_patient(cohort, 0.25, seed=42)
    result = train.train_models(train_frame, search_budget_s=1.0, n_iter=3)
    return result, holdout


def test_small_real_run_gives_sane_metrics(trained) -> None:
    result, holdout = trained
    model_eval = evaluate.evaluate_model(result.model, holdout)
    baseline_eval = evaluate.evaluate_model(result.baseline, holdout)
    for ev in (model_eval, baseline_eval):
        m = ev.metrics
        assert m["roc_auc"] > 0.55
        assert 0 < m["brier"] < 0.2 and 0 < m["pr_auc"] < 1
        assert 0 < ev.threshold < 1 and ev.threshold_rule == train.THRESHOLD_RULE
        assert sum(ev.calibration["count"]) == len(holdout)
        assert {r["attribute"] for r in ev.subgroups} == {"race", "gender", "age"}
        json.dumps(ev.to_dict())
    json.dumps(result.to_dict())
    assert result.search_trials and result.search_trials[0]["complete"]
    assert set(result.cv_scores) >= {"xgboost", "baseline"}
    assert len(result.feature_names) == result.model[:-1].transform(holdout.head(2)).shape[1]


def test_model_scores_raw_rows_without_ids_or_label(trained) -> None:
    result, holdout = trained
    rows = holdout.head(5).drop(columns=["encounter_id", "patient_nbr", "readmitted"])
    p = result.model.predict_proba(rows)[:, 1]
    assert p.shape == (5,) and ((p > 0) & (p < 1)).all()


def test_label_any_trains_its_own_definition(trained, sample_frame: pd.DataFrame) -> None:
    _, holdout = trained
    cohort = data.exclude_died_or_hospice(sample_frame).head(1500)
    result = train.train_models(cohort, label="any", search_budget_s=0.5, n_iter=1)
    assert result.model.label_definition_ == "any"
    ev = evaluate.evaluate_model(result.model, holdout, label="any")
    assert ev.label_definition == "any" and ev.metrics["prevalence"] > 0.3
