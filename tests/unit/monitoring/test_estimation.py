"""Confidence-based performance estimation on synthetic windows: labels drawn from the
probabilities (the model calibrated on the window), and labels drawn from something else
(concept drift, which estimation cannot see)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import auc as curve_area
from sklearn.metrics import roc_auc_score

from readmit.monitoring import estimation


def risks(n: int, seed: int) -> np.ndarray:
    """Skewed risks like the model's (mean about 0.12)."""
    return np.random.default_rng(seed).beta(1.5, 11.0, n)


def draw_labels(p: np.ndarray, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(len(p)) < p).astype(int)


# ----------------------------------------------------------------------------------------------
# The expected AUC itself
# ----------------------------------------------------------------------------------------------


def test_expected_auc_is_the_area_under_the_expected_roc_curve_with_ties() -> None:
    p = np.round(risks(400, seed=1), 2)  # rounding makes many ties
    thresholds = np.unique(p)[::-1]
    tpr = [0.0] + [p[p >= t].sum() / p.sum() for t in thresholds]
    fpr = [0.0] + [(1 - p[p >= t]).sum() / (1 - p).sum() for t in thresholds]
    assert len(thresholds) < len(p) / 5
    assert estimation.expected_auc(p, exclude_self_pairs=False) == pytest.approx(
        curve_area(fpr, tpr), abs=1e-12
    )


def test_expected_auc_without_self_pairs_is_the_expected_pair_ordering() -> None:
    p = np.round(risks(300, seed=2), 2)
    weight = p[:, None] * (1 - p[None, :])
    np.fill_diagonal(weight, 0.0)
    ordered = (p[:, None] > p[None, :]) + 0.5 * (p[:, None] == p[None, :])
    brute = (ordered * weight).sum() / weight.sum()
    assert estimation.expected_auc(p) == pytest.approx(brute, abs=1e-12)
    # the two conventions differ by O(1/n) only
    assert estimation.expected_auc(p, exclude_self_pairs=False) == pytest.approx(brute, abs=2e-3)


def test_ties_count_one_half_on_a_hand_computed_window() -> None:
    p = [0.5, 1.0, 0.0, 0.5]
    # positives' mass 0.5, 0.5, 1 vs negatives' 1, 0.5, 0.5; the tied 0.5s count one half
    assert estimation.expected_auc(p, exclude_self_pairs=False) == pytest.approx(3.5 / 4)
    assert estimation.expected_auc(p) == pytest.approx(3.25 / 3.5)


def test_expected_auc_does_not_depend_on_row_order() -> None:
    p = np.round(risks(1000, seed=3), 3)
    shuffled = np.random.default_rng(0).permutation(p)
    assert estimation.expected_auc(shuffled) == pytest.approx(estimation.expected_auc(p))


def test_a_constant_probability_window_is_estimated_at_one_half() -> None:
    for exclude in (True, False):
        assert estimation.expected_auc(np.full(500, 0.13), exclude_self_pairs=exclude) == (
            pytest.approx(0.5)
        )
    estimate = estimation.estimate_performance(np.full(2000, 0.2), seed=1)
    assert estimate.estimated_auc == pytest.approx(0.5)
    # every score tied: whatever the outcomes, the realised AUC is exactly one half
    assert (estimate.low, estimate.high) == (pytest.approx(0.5), pytest.approx(0.5))
    p = np.full(2000, 0.2)
    assert estimation.realised_performance(p, draw_labels(p, seed=2)).roc_auc == 0.5


def test_a_window_without_expected_positives_has_no_estimate() -> None:
    estimate = estimation.estimate_performance(np.zeros(50))
    assert estimate.estimated_auc is None
    assert (estimate.low, estimate.high, estimate.auc_std, estimate.n_draws) == (None,) * 3 + (0,)
    assert estimate.covers(0.7) is None
    assert estimate.estimated_prevalence == 0.0


def test_rank_auc_equals_sklearn_with_ties_and_is_none_for_one_class() -> None:
    p = np.round(risks(2000, seed=4), 2)
    y = draw_labels(p, seed=5)
    assert estimation.rank_auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert estimation.rank_auc(np.zeros(10), np.linspace(0, 1, 10)) is None
    assert estimation.rank_auc(np.ones(10), np.linspace(0, 1, 10)) is None


# ----------------------------------------------------------------------------------------------
# Calibrated windows: the estimate is what will be realised
# ----------------------------------------------------------------------------------------------


def test_the_estimate_is_the_realised_auc_in_expectation() -> None:
    p = risks(20_000, seed=6)
    estimate = estimation.estimate_performance(p, seed=0)
    assert estimate.estimated_auc is not None
    realised = [
        estimation.realised_performance(p, draw_labels(p, seed)).roc_auc for seed in range(40)
    ]
    assert np.mean(realised) == pytest.approx(estimate.estimated_auc, abs=0.003)
    assert estimate.auc_std is not None  # the label noise the band is made of, as realised
    assert np.std(realised, ddof=1) == pytest.approx(estimate.auc_std, rel=0.35)
    big = risks(100_000, seed=7)
    once = estimation.realised_performance(big, draw_labels(big, 8)).roc_auc
    assert once == pytest.approx(estimation.expected_auc(big), abs=0.01)


def test_the_band_covers_the_realised_auc_at_about_its_nominal_rate() -> None:
    hits = {0.9: 0, 0.5: 0}
    trials = 0
    for window in range(20):
        p = risks(2000, seed=100 + window)
        bands = {lvl: estimation.estimate_performance(p, level=lvl, seed=window) for lvl in hits}
        for draw in range(25):
            auc = estimation.rank_auc(draw_labels(p, seed=10_000 + 100 * window + draw), p)
            trials += 1
            for lvl, band in bands.items():
                hits[lvl] += bool(band.covers(auc))
    assert 0.85 <= hits[0.9] / trials <= 0.95
    assert 0.42 <= hits[0.5] / trials <= 0.58


def test_the_band_narrows_as_the_window_grows() -> None:
    small = estimation.estimate_performance(risks(1000, seed=9), seed=0)
    large = estimation.estimate_performance(risks(16_000, seed=9), seed=0)
    assert small.low is not None and small.high is not None
    assert large.low is not None and large.high is not None
    # the AUC's standard error shrinks like 1/sqrt(n): a quarter of the width, give or take
    assert 0.15 < (large.high - large.low) / (small.high - small.low) < 0.4


def test_the_estimate_follows_a_covariate_shift() -> None:
    """Selecting rows by their inputs (here: their risk) keeps P(y|x) and changes the AUC; the
    estimate moves with the realised AUC."""
    p = risks(60_000, seed=10)
    y = draw_labels(p, seed=11)
    for selected in (p < np.quantile(p, 0.5), p > np.quantile(p, 0.5)):
        estimate = estimation.estimate_performance(p[selected], seed=1)
        realised = estimation.realised_performance(p[selected], y[selected]).roc_auc
        assert estimate.estimated_auc is not None and realised is not None
        assert realised < estimation.expected_auc(p) - 0.05  # the shift changed the AUC ...
        assert estimate.estimated_auc == pytest.approx(realised, abs=0.015)  # ... and it follows


def test_estimated_prevalence_and_brier_are_their_expectations() -> None:
    p = risks(50_000, seed=12)
    y = draw_labels(p, seed=13)
    estimate = estimation.estimate_performance(p)
    realised = estimation.realised_performance(p, y)
    assert realised.prevalence is not None and realised.brier is not None
    assert estimate.estimated_prevalence == pytest.approx(realised.prevalence, abs=0.005)
    assert estimate.estimated_brier == pytest.approx(realised.brier, abs=0.003)


# ----------------------------------------------------------------------------------------------
# Concept drift: the known limitation
# ----------------------------------------------------------------------------------------------


def test_concept_drift_is_invisible_to_the_estimate() -> None:
    """Outcomes drawn from altered probabilities: the served probabilities (and so the
    estimate) are the same, the realised AUC is not. Only outcomes reveal it."""
    p = risks(20_000, seed=14)
    estimate = estimation.estimate_performance(p, seed=0)
    assert estimate.estimated_auc is not None
    order = np.argsort(p)
    swapped = p.copy()  # the riskest and safest halves trade their true risks
    swapped[order] = p[order[::-1]]
    weakened = 0.5 * p + 0.5 * p.mean()  # half the signal is gone
    for truth, least_drop in ((swapped, 0.3), (weakened, 0.03)):
        realised = estimation.realised_performance(p, draw_labels(truth, seed=15))
        assert realised.roc_auc is not None
        assert estimate.estimated_auc - realised.roc_auc > least_drop
        assert estimate.covers(realised.roc_auc) is False


# ----------------------------------------------------------------------------------------------
# Determinism, realised figures, validation
# ----------------------------------------------------------------------------------------------


def test_the_estimate_is_deterministic_for_a_seed() -> None:
    p = risks(3000, seed=16)
    first = estimation.estimate_performance(p, seed=7)
    assert estimation.estimate_performance(p, seed=7) == first
    assert estimation.estimate_performance(p, seed=np.random.default_rng(7)) == first
    other = estimation.estimate_performance(p, seed=8)
    assert other.estimated_auc == first.estimated_auc  # closed form: no randomness
    assert (other.low, other.high) != (first.low, first.high)
    np.testing.assert_array_equal(
        estimation.simulated_aucs(p, n_draws=30, seed=3),
        estimation.simulated_aucs(p, n_draws=30, seed=3),
    )


def test_the_estimate_serialises_to_json() -> None:
    estimate = estimation.estimate_performance(risks(500, seed=17), level=0.8, n_draws=50)
    data = json.loads(json.dumps(estimate.to_dict()))
    assert data["n"] == 500 and data["level"] == 0.8 and data["n_draws"] == 50
    assert data["low"] <= data["estimated_auc"] <= data["high"]


def test_realised_performance_uses_only_rows_whose_outcome_arrived() -> None:
    p = risks(1000, seed=18)
    y = draw_labels(p, seed=19).astype(float)
    pending = y.copy()
    pending[::4] = np.nan
    known = ~np.isnan(pending)
    result = estimation.realised_performance(p, pending)
    assert result.n_labelled == int(known.sum()) == 750
    assert result.positives == int(y[known].sum())
    assert result.roc_auc == pytest.approx(roc_auc_score(y[known], p[known]))
    assert result.prevalence == pytest.approx(y[known].mean())
    assert result.brier == pytest.approx(np.mean((y[known] - p[known]) ** 2))
    json.dumps(result.to_dict())


def test_realised_auc_is_none_with_one_class_or_no_outcome() -> None:
    p = np.array([0.1, 0.4, 0.8])
    one_class = estimation.realised_performance(p, [0, 0, 0])
    assert one_class.roc_auc is None and one_class.prevalence == 0.0
    nothing = estimation.realised_performance(p, [np.nan] * 3)
    assert nothing == estimation.RealisedPerformance(0, 0, None, None, None)


def test_label_coverage() -> None:
    assert estimation.label_coverage(200, 50) == 0.25
    assert estimation.label_coverage(0, 0) == 0.0
    with pytest.raises(ValueError, match="an outcome must belong to a prediction"):
        estimation.label_coverage(10, 11)
    with pytest.raises(ValueError, match="must not be negative"):
        estimation.label_coverage(-1, 0)


@pytest.mark.parametrize(
    ("probabilities", "message"),
    [
        ([], "probabilities are empty"),
        ([0.1, np.nan, 0.3], r"1 NaN or infinite value\(s\) \(first at position 1\)"),
        ([0.1, np.inf], "NaN or infinite"),
        ([0.1, 1.2, -0.1], r"must lie in \[0, 1\]; 2 value\(s\) outside \(min -0.1, max 1.2\)"),
        ([[0.1, 0.2]], "one-dimensional"),
    ],
)
def test_invalid_probabilities_are_refused_clearly(probabilities: list, message: str) -> None:
    for call in (
        estimation.expected_auc,
        estimation.estimate_performance,
        estimation.simulated_aucs,
        lambda p: estimation.realised_performance(p, np.zeros(np.size(p))),
    ):
        with pytest.raises(ValueError, match=message):
            call(probabilities)


def test_invalid_options_and_labels_are_refused_clearly() -> None:
    p = np.array([0.1, 0.5, 0.9])
    with pytest.raises(ValueError, match="level must be strictly between 0 and 1"):
        estimation.estimate_performance(p, level=1.0)
    with pytest.raises(ValueError, match="n_draws must be at least 1"):
        estimation.estimate_performance(p, n_draws=0)
    with pytest.raises(ValueError, match="2 labels for 3 probabilities"):
        estimation.realised_performance(p, [0, 1])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        estimation.realised_performance(p, [0, 1, 2])
