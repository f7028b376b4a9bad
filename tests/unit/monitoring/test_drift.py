"""Drift injection, effect sizes, calibrated severity, performance, report serialisation and HTML.

Frames are synthetic encounters drawn from the schema's own value sets (seeded), a few thousand
rows: big enough for stable drift scores, small enough to keep the file at a few seconds.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from readmit.monitoring import drift, profiling
from readmit.reports.page import BASE_CSS
from readmit.reports.report import render_drift_report_html
from readmit.schema import (
    ADMISSION_TYPE_IDS,
    AGE_BANDS,
    COLUMN_BY_NAME,
    COLUMNS,
    LABEL_COLUMN,
    Kind,
)

CODES = ("250.83", "428", "414", "786", "V57", "E909", "276", "599")


def encounters(n: int, seed: int, first_id: int = 1) -> pd.DataFrame:
    """Synthetic raw encounters with schema dtypes; readmission depends on prior stays."""
    rng = np.random.default_rng(seed)
    out: dict[str, object] = {}
    for column in COLUMNS:
        if column.kind is Kind.ID or column.kind is Kind.LABEL:
            continue
        if column.values is not None:
            weights = np.linspace(1.0, 3.0, len(column.values)) ** 2
            if len(weights) >= 5:
                weights[-1] = 0.0  # as in the real data, some valid codes never occur
            out[column.name] = rng.choice(
                np.array(column.values, dtype=object), n, p=weights / weights.sum()
            )
        elif column.kind is Kind.INT:
            out[column.name] = np.clip(
                rng.poisson(3, n) + column.min_value, column.min_value, column.max_value
            )
        else:
            out[column.name] = rng.choice(np.array(CODES, dtype=object), n)
        if column.max_missing > 0:
            values = pd.Series(out[column.name], dtype=object)
            values[rng.random(n) < column.max_missing / 3] = None
            out[column.name] = values
    frame = pd.DataFrame(out)
    risk = np.where(frame["number_inpatient"] > 3, 0.25, 0.05)
    label = np.where(rng.random(n) < risk, "<30", np.where(rng.random(n) < 0.4, ">30", "NO"))
    frame[LABEL_COLUMN] = label
    frame.insert(0, "patient_nbr", first_id + np.arange(n) // 2)
    frame.insert(0, "encounter_id", first_id + np.arange(n))
    for column in COLUMNS:
        is_int = column.kind in (Kind.ID, Kind.INT)
        frame[column.name] = frame[column.name].astype("Int64" if is_int else "string")
    return frame


@pytest.fixture(scope="module")
def reference_frame() -> pd.DataFrame:
    return encounters(12_000, seed=1)


@pytest.fixture(scope="module")
def monitor(reference_frame):
    reference = profiling.profile_frame(reference_frame)
    thresholds = drift.calibrate_from_frame(reference_frame, n_batches=6, batch_size=2000, seed=3)
    return reference, thresholds


@pytest.fixture(scope="module")
def batch() -> pd.DataFrame:
    return encounters(2000, seed=7, first_id=100_000)


def severity_of(monitor, frame: pd.DataFrame) -> drift.DriftReport:
    reference, thresholds = monitor
    features = drift.score_features(reference, profiling.profile_frame(frame), thresholds)
    return drift.drift_report("test-batch", features, thresholds=thresholds)


# --- injection ------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", list(drift.SCENARIOS))
def test_scenarios_are_deterministic_by_seed(batch, scenario: str) -> None:
    first = drift.inject(batch, scenario, "strong", seed=5)
    again = drift.inject(batch, scenario, "strong", seed=5)
    other = drift.inject(batch, scenario, "strong", seed=6)
    pd.testing.assert_frame_equal(first, again)
    assert not first.equals(other)
    assert not first.equals(batch)
    assert batch.equals(encounters(2000, seed=7, first_id=100_000)), "the input was modified"


def test_covariate_shift_ages_the_population_and_adds_emergencies(batch) -> None:
    out = drift.covariate_shift(batch, 0.5, seed=0)
    order = {band: i for i, band in enumerate(AGE_BANDS)}
    assert out["age"].map(order).mean() > batch["age"].map(order).mean() + 0.3
    emergency = drift.EMERGENCY_ADMISSION_TYPE
    assert emergency in ADMISSION_TYPE_IDS
    assert (
        out["admission_type_id"].eq(emergency).mean()
        > batch["admission_type_id"].eq(emergency).mean() + 0.15
    )
    untouched = [c for c in batch.columns if c not in ("age", "admission_type_id")]
    pd.testing.assert_frame_equal(out[untouched], batch[untouched])
    assert out["age"].isin(AGE_BANDS).all()


def test_hospital_mix_moves_source_and_payer_to_valid_targets(batch) -> None:
    out = drift.hospital_mix_change(batch, 0.3, seed=0)
    for name, value in drift.HOSPITAL_MIX_TARGETS.items():
        assert value in COLUMN_BY_NAME[name].values
        assert out[name].eq(value).mean() > batch[name].eq(value).mean() + 0.2
    with pytest.raises(ValueError, match="payer_code"):
        drift.hospital_mix_change(batch, 0.3, targets={"payer_code": "XX"})


def test_missing_surge_stays_within_the_schema_tolerance(batch) -> None:
    limit = COLUMN_BY_NAME["race"].max_missing
    before = batch["race"].isna().mean()
    out = drift.missing_surge(batch, 0.8, seed=0)
    assert before + 0.5 * (limit - before) < out["race"].isna().mean() <= limit
    with pytest.raises(ValueError, match="age may not be missing"):
        drift.missing_surge(batch, 0.5, column="age")


def test_unseen_category_is_valid_but_new_or_refused(batch) -> None:
    spec = COLUMN_BY_NAME["admission_source_id"]
    present = set(batch["admission_source_id"].dropna())
    out = drift.unseen_category(batch, 0.1, seed=0)
    new = set(out["admission_source_id"].dropna()) - present
    assert len(new) == 1 and new <= set(spec.values)
    assert out["admission_source_id"].isin(new).mean() == pytest.approx(0.1, abs=0.03)
    code = drift.unseen_category(batch, 0.1, column="diag_1")
    assert (code["diag_1"] == drift.NEW_ICD9_CODE).any()
    assert re.fullmatch(COLUMN_BY_NAME["diag_1"].regex, drift.NEW_ICD9_CODE)
    with pytest.raises(ValueError, match="quarantine"):
        drift.unseen_category(batch, 0.1, column="payer_code", value="ZZ")
    invalid = drift.unseen_category(batch, 0.1, column="payer_code", value="ZZ", allow_invalid=True)
    assert (invalid["payer_code"] == "ZZ").any()


def test_label_rate_shift_is_a_prior_shift(batch) -> None:
    before = batch[LABEL_COLUMN].eq("<30").mean()
    out = drift.label_rate_shift(batch, 0.1, seed=0)
    assert out[LABEL_COLUMN].eq("<30").mean() == pytest.approx(before + 0.1, abs=0.03)
    assert out["encounter_id"].isin(batch["encounter_id"]).all(), "rows are kept, never invented"
    assert out[LABEL_COLUMN].eq("<30").sum() == batch[LABEL_COLUMN].eq("<30").sum()


def test_concept_change_keeps_marginals_and_breaks_the_relation(batch) -> None:
    out = drift.concept_change(batch, 0.8, seed=0)
    high = batch["number_inpatient"] > batch["number_inpatient"].median()
    rate = lambda f, rows: f.loc[rows, LABEL_COLUMN].eq("<30").mean()  # noqa: E731
    assert out[LABEL_COLUMN].eq("<30").sum() == batch[LABEL_COLUMN].eq("<30").sum()
    assert rate(batch, high) > rate(batch, ~high) + 0.05
    assert rate(out, high) < rate(out, ~high)
    pd.testing.assert_frame_equal(out.drop(columns=LABEL_COLUMN), batch.drop(columns=LABEL_COLUMN))


def test_strength_amounts_grow_and_gradual_ramps(batch) -> None:
    for spec in drift.SCENARIOS.values():
        amounts = [spec.amounts[s] for s in drift.STRENGTHS]
        assert amounts == sorted(amounts) and amounts[0] > 0
    assert drift.ramp_levels(6, "gradual", 4) == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    episode = drift.inject_sequence(
        [batch] * 3, "covariate_shift", "strong", mode="gradual", ramp_batches=3
    )
    emergency = [b["admission_type_id"].eq(drift.EMERGENCY_ADMISSION_TYPE).mean() for b in episode]
    assert emergency[0] < emergency[1] < emergency[2]
    with pytest.raises(ValueError, match="unknown drift scenario"):
        drift.inject(batch, "meteor", "strong")


# --- scores and severity ----------------------------------------------------------------------


def test_effect_sizes_basics() -> None:
    assert drift.psi([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0)
    assert drift.psi([50, 50], [90, 10]) > drift.psi([50, 50], [60, 40]) > 0
    assert drift.hellinger([1, 0], [0, 1]) == pytest.approx(1.0)
    assert drift.hellinger([3, 3], [1, 1]) == pytest.approx(0.0)


def test_clean_batch_is_none(monitor, batch) -> None:
    report = severity_of(monitor, batch)
    assert report.severity is drift.Severity.NONE, report.responsible
    assert not report.alert


def test_strong_covariate_shift_names_its_features(monitor, batch) -> None:
    report = severity_of(monitor, drift.inject(batch, "covariate_shift", "strong"))
    assert report.severity.rank >= drift.Severity.MODERATE.rank
    assert {"age", "admission_type_id"} <= set(report.responsible[:3])
    assert report.alert


@pytest.mark.parametrize(
    "scenario", ["covariate_shift", "hospital_mix", "missing_surge", "unseen_category"]
)
def test_severity_grows_with_strength(monitor, batch, scenario: str) -> None:
    ranks = [
        severity_of(monitor, drift.inject(batch, scenario, s, seed=1)).severity.rank
        for s in drift.STRENGTHS
    ]
    assert ranks == sorted(ranks), ranks
    assert ranks[-1] >= drift.Severity.MODERATE.rank


def test_label_drift_is_scored_when_labels_arrive(monitor, batch) -> None:
    reference, thresholds = monitor
    labels = drift.inject(batch, "label_rate", "strong")[[LABEL_COLUMN]]
    scored = drift.score_features(reference, profiling.profile_frame(labels), thresholds)
    assert [f.feature for f in scored] == [LABEL_COLUMN]
    assert scored[0].kind == "label" and scored[0].ratio > 1


def test_thresholds_are_calibrated_floored_and_stored(monitor, tmp_path) -> None:
    _, thresholds = monitor
    assert thresholds.n_batches == 6 and 1900 <= thresholds.batch_size <= 2100
    assert "patient_nbr" not in thresholds.features and "encounter_id" not in thresholds.features
    age = thresholds.features["age"]
    assert set(age) == {"psi", "missing", "unseen"}
    assert age["psi"] == pytest.approx(
        max(thresholds.null_max["age"]["psi"] * 1.5, drift.STATISTIC["psi"].floor)
    )
    assert age["missing"] == drift.STATISTIC["missing"].floor, (
        "age is never missing: the floor applies"
    )
    smaller = thresholds.for_rows(thresholds.batch_size // 4)
    assert smaller["age"]["psi"] == pytest.approx(age["psi"] * 4)
    assert thresholds.for_rows(10 * thresholds.batch_size) == thresholds.features
    url = drift.write_thresholds(thresholds, str(tmp_path / "thresholds.json"))
    assert drift.read_thresholds(url) == thresholds


def test_prediction_drift(batch) -> None:
    rng = np.random.default_rng(0)
    held_out = rng.beta(2, 14, 8000)
    reference, thresholds = drift.calibrate_predictions(held_out, n_batches=6, batch_size=2000)
    same = drift.score_predictions(
        reference, profiling.profile_predictions(rng.beta(2, 14, 2000)), thresholds
    )
    shifted = drift.score_predictions(
        reference, profiling.profile_predictions(rng.beta(3, 14, 2000)), thresholds
    )
    assert same.level is drift.Severity.NONE
    assert shifted.level.rank >= drift.Severity.MODERATE.rank
    assert shifted.kind == "prediction" and shifted.driver in ("psi", "wasserstein")


# --- performance ----------------------------------------------------------------------------


def test_performance_drop_and_its_reasons() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(2, 14, 5000)
    y = (rng.random(5000) < p).astype(int)
    baseline = drift.performance_baseline(y, p)
    assert not drift.assess_performance(y, p, baseline).performance_drop
    shuffled = drift.assess_performance(rng.permutation(y), p, baseline)
    assert shuffled.performance_drop and "ROC AUC" in shuffled.reasons[0]
    more = np.maximum(y, (rng.random(5000) < 0.08).astype(int))
    assert any("observed rate" in r for r in drift.assess_performance(more, p, baseline).reasons)
    few = drift.assess_performance(y[:40], p[:40], baseline)
    assert not few.evaluable and not few.performance_drop
    with pytest.raises(ValueError, match="labels but"):
        drift.assess_performance(y, p[:10], baseline)


# --- report -----------------------------------------------------------------------------------


def test_report_is_json_and_html_self_contained(monitor, batch) -> None:
    drifted = drift.inject(batch, "covariate_shift", "strong")
    reference, thresholds = monitor
    features = drift.score_features(reference, profiling.profile_frame(drifted), thresholds)
    rng = np.random.default_rng(0)
    p = rng.beta(2, 14, 2000)
    y = (rng.random(2000) < p).astype(int)
    perf = drift.assess_performance(y, p, drift.performance_baseline(y, p))
    report = drift.drift_report("batch-0007", features, performance=perf, thresholds=thresholds)
    text = json.dumps(report.to_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["severity"] in ("moderate", "major") and back["alert"] is True
    assert back["performance"]["performance_drop"] is False
    summary = json.loads(json.dumps(report.summary(), allow_nan=False))
    assert (
        summary["severity"] == back["severity"]
        and summary["features"][:2] == report.responsible[:2]
    )
    rows = report.table_rows()
    assert rows[0]["feature"] == report.features[0].feature and isinstance(rows[0]["level"], str)
    json.dumps(rows, allow_nan=False)
    for identifier in ("patient_nbr", "encounter_id", str(batch["patient_nbr"].iloc[0]) + ","):
        assert identifier not in text
    html = render_drift_report_html(report, "Drift <batch-0007>")
    assert html.startswith("<!DOCTYPE html>") and "&lt;batch-0007&gt;" in html
    assert not re.search(r"https?://|<script|<link|@import|src=", html, flags=re.IGNORECASE)
    assert "<svg" in html and "age" in html and report.severity.value in html
    assert BASE_CSS in html  # the one page shell of every report


def test_a_statistic_is_one_registry_entry(monitor, monkeypatch) -> None:
    """Adding a statistic is one entry: it is computed, calibrated with its floor, scaled with
    its noise power and shown in the report, with nothing else to edit."""
    reference, _ = monitor
    extra = drift.Statistic(
        "max_share_change",
        lambda c: float(
            np.max(np.abs(np.subtract(drift._shares(c.cur_counts), drift._shares(c.ref_counts))))
        ),
        kinds=drift.KINDS,
        decides=frozenset({"categorical"}),
        floor=0.02,
        noise_power=0.5,
        column="largest share change",
    )
    monkeypatch.setattr(drift, "STATISTICS", (*drift.STATISTICS, extra))
    monkeypatch.setattr(drift, "STATISTIC", {**drift.STATISTIC, extra.name: extra})
    monkeypatch.setattr("readmit.reports.report.STATISTICS", drift.STATISTICS)
    profile = reference  # the reference profile against itself: every statistic at its floor
    pairs = [(profile, profile)]
    thresholds = drift.calibrate_thresholds(pairs)
    assert thresholds.features["age"]["max_share_change"] == 0.02
    assert "max_share_change" not in thresholds.features["num_medications"]
    half = thresholds.for_rows(thresholds.batch_size // 4)
    assert half["age"]["max_share_change"] == pytest.approx(0.02 * 2)
    report = drift.drift_report("b", drift.score_features(profile, profile, thresholds))
    assert "largest share change" in render_drift_report_html(report, "t")
