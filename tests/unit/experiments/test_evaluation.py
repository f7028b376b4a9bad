"""Judging a live experiment on served rows (as monitoring's windows keep them) and matured
outcomes, with a known truth: the experiment's rows only, outcomes only once they arrived after
the prediction, shadow pairs and canary arms, and the daily confidence sequence."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from readmit.experiments import evaluation, sequential
from readmit.experiments.spec import ExperimentSpec, answering_variant
from readmit.monitoring import windows

T0 = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = sequential.SequentialPolicy(min_n=200, max_n=20_000)


def _spec(mode: str = "shadow") -> ExperimentSpec:
    return ExperimentSpec("exp-1", mode, "m:champion", "m:challenger", 0.5)  # type: ignore[arg-type]


def _served(n: int, spec: ExperimentSpec, better: bool, seed: int = 0) -> tuple[pd.DataFrame, ...]:
    """Served rows and outcomes: the truth is `risk`; the champion sees it through noise, the
    challenger (if `better`) with much less noise, else with the same amount."""
    rng = np.random.default_rng(seed)
    logit = rng.normal(-2.1, 0.9, n)
    risk = 1 / (1 + np.exp(-logit))
    y = rng.random(n) < risk
    champion = 1 / (1 + np.exp(-(logit + rng.normal(0, 1.0, n))))
    challenger = 1 / (1 + np.exp(-(logit + rng.normal(0, 0.2 if better else 1.0, n))))
    keys = [f"e{i}" for i in range(n)]
    patients = [f"p{i}" for i in range(n)]
    served_at = [T0 + timedelta(hours=i % 2000) for i in range(n)]
    variants = [answering_variant(spec, p) for p in patients]
    canary = spec.mode == "canary"
    answered = np.where(np.array(variants) == "challenger", challenger, champion)
    served = pd.DataFrame({
        "encounter_key": keys, "patient_key": patients,
        "probability": answered if canary else champion,
        "model_tag": "m", "timestamp": pd.to_datetime(served_at, utc=True),
        "in_cohort": True, "rescored": np.nan, "experiment_id": spec.id,
        "variant": variants, "challenger_probability": np.nan if canary else challenger,
    })  # fmt: skip
    received = [(t + timedelta(days=31)).isoformat() for t in served_at]
    outcomes = pd.DataFrame({
        "encounter_key": keys, "readmitted": np.where(y, "<30", "NO"), "received_at": received,
    })  # fmt: skip
    return served, outcomes


def test_a_better_shadow_challenger_is_found_and_an_equal_one_is_not() -> None:
    spec = _spec()
    served, outcomes = _served(6000, spec, better=True)
    data = evaluation.experiment_data(served, outcomes, spec, "<30")
    result = evaluation.judge(data, spec, POLICY)
    assert result.mode == "shadow" and result.n == 6000
    assert result.outcome == "challenger_better" and result.cs_lower > 0
    assert result.auc_diff is not None and result.auc_diff > 0
    served, outcomes = _served(6000, spec, better=False, seed=1)
    same = evaluation.judge(evaluation.experiment_data(served, outcomes, spec, "<30"), spec, POLICY)
    assert same.outcome == "continue" and same.cs_lower < 0 < same.cs_upper


def test_only_this_experiments_rows_with_outcomes_received_after_serving_count() -> None:
    spec = _spec()
    served, outcomes = _served(1000, spec, better=True)
    served.loc[served.index[:100], "experiment_id"] = "another"
    served.loc[served.index[100:150], "in_cohort"] = False  # died / hospice: never judged
    outcomes.loc[outcomes.index[900:], "received_at"] = (T0 - timedelta(days=1)).isoformat()
    outcomes = outcomes.iloc[:-50]  # no outcome yet for some (not the early ones)
    data = evaluation.experiment_data(served, outcomes, spec, "<30")
    assert data.served == 850  # cohort rows of this experiment
    assert len(data.matured) == 750 and data.outcomes_before_prediction == 50


def test_a_canary_compares_the_two_arms_and_needs_both() -> None:
    spec = _spec("canary")
    served, outcomes = _served(8000, spec, better=True)
    data = evaluation.experiment_data(served, outcomes, spec, "<30")
    result = evaluation.judge(data, spec, POLICY)
    assert result.mode == "canary" and result.n_champion + result.n_challenger == 8000
    assert 0.45 < result.n_challenger / result.n < 0.55
    assert result.estimate > 0 and result.outcome == "challenger_better"
    only_champion = served[served["variant"] == "champion"]
    with pytest.raises(evaluation.NotEnoughOutcomes, match="arm"):
        evaluation.judge(evaluation.experiment_data(only_champion, outcomes, spec, "<30"), spec,
                         POLICY)  # fmt: skip


def test_the_daily_looks_narrow_and_end_on_the_decision() -> None:
    spec = _spec()
    served, outcomes = _served(6000, spec, better=True)
    data = evaluation.experiment_data(served, outcomes, spec, "<30")
    looks = evaluation.daily_looks(data, spec, POLICY, "timestamp")
    assert len(looks) >= 50 and looks["n"].is_monotonic_increasing
    width = (looks["cs_upper"] - looks["cs_lower"]).dropna()
    assert width.iloc[-1] < width.iloc[len(width) // 4]
    assert looks["outcome"].iloc[-1] == evaluation.judge(data, spec, POLICY).outcome


def test_windows_keep_the_experiment_columns_and_read_old_pieces_without_them() -> None:
    spec = _spec()
    served, _ = _served(10, spec, better=True)
    served["discharge_disposition_id"] = [1, 11, 1, 13, 1, 1, 1, 1, 1, 1]  # 11 died, 13 hospice
    kept = windows.served_table(served.drop(columns=["in_cohort", "rescored"]), {})
    assert list(kept.columns) == list(windows.SERVED_COLUMNS)
    assert kept["experiment_id"].eq("exp-1").all() and kept["challenger_probability"].notna().all()
    assert kept["in_cohort"].tolist() == [True, False, True, False] + [True] * 6
    old = windows.served_table(served[["encounter_key", "patient_key", "probability", "model_tag",
                                       "timestamp", "discharge_disposition_id"]], {})  # fmt: skip
    assert old["experiment_id"].isna().all() and old["variant"].isna().all()
