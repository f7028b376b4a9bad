"""The statistics of a live experiment: losses, DeLong, the confidence sequence and the
decision, on hand-built inputs and against independent references (sklearn, brute force,
the bootstrap)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sklearn_log_loss

from readmit.experiments import sequential
from readmit.experiments.sequential import SequentialPolicy


def scored(n: int, seed: int, noise: tuple[float, float] = (1.0, 1.0)) -> tuple[np.ndarray, ...]:
    """Labels and two models' probabilities, both informative, with ties from rounding."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(-2.0 + x)))).astype(int)
    a = np.round(1 / (1 + np.exp(-(-2.0 + x + noise[0] * rng.standard_normal(n)))), 3)
    b = np.round(1 / (1 + np.exp(-(-2.0 + x + noise[1] * rng.standard_normal(n)))), 3)
    return y, a, b


# ----------------------------------------------------------------------------------------------
# Losses and validation
# ----------------------------------------------------------------------------------------------


def test_losses_match_sklearn_and_clipping_keeps_a_confident_miss_finite() -> None:
    y, p, _ = scored(500, seed=1)
    assert sequential.encounter_losses(p, y, "log_loss").mean() == pytest.approx(
        sklearn_log_loss(y, p), rel=1e-9
    )
    assert sequential.encounter_losses(p, y, "brier").mean() == pytest.approx(
        brier_score_loss(y, p), rel=1e-12
    )
    miss = sequential.encounter_losses([0.0, 1.0], [1, 0], "log_loss")
    assert np.all(np.isfinite(miss)) and miss == pytest.approx(-np.log(sequential.CLIP))


@pytest.mark.parametrize(
    ("probabilities", "labels", "message"),
    [
        ([0.1, 0.2], [0, 1, 1], "match one to one"),
        ([0.1, 0.2], [0, 2], "0 or 1"),
        ([0.1, 0.2], [0, np.nan], "0 or 1"),
        ([0.1, 1.2], [0, 1], r"\[0, 1\]"),
        ([-0.1, 0.2], [0, 1], r"\[0, 1\]"),
        ([np.nan, 0.2], [0, 1], "NaN"),
    ],
)
def test_bad_inputs_are_refused_with_a_clear_message(
    probabilities: list[float], labels: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sequential.shadow_test(probabilities, [0.1, 0.2], labels)
    with pytest.raises(ValueError, match=message):
        sequential.canary_test(probabilities, labels, [0.1], [1])


def test_the_challenger_must_score_the_same_encounters_in_shadow() -> None:
    with pytest.raises(ValueError, match="match one to one"):
        sequential.shadow_test([0.1, 0.2], [0.1, 0.2, 0.3], [0, 1])


def test_a_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="metric"):
        SequentialPolicy(metric="accuracy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="alpha"):
        SequentialPolicy(alpha=0.0)
    with pytest.raises(ValueError, match="min_n"):
        SequentialPolicy(min_n=100, max_n=50)


# ----------------------------------------------------------------------------------------------
# DeLong
# ----------------------------------------------------------------------------------------------


def test_midranks_match_scipy_with_ties() -> None:
    values = np.round(np.random.default_rng(2).random(300), 1)
    assert sequential.midranks(values) == pytest.approx(rankdata(values))


def test_fast_delong_matches_the_brute_force_definition() -> None:
    y, a, b = scored(120, seed=3)
    pos, neg = y == 1, y == 0

    def kernel(s: np.ndarray) -> np.ndarray:  # psi(positive i, negative j)
        return (s[pos][:, None] > s[neg][None, :]) + 0.5 * (s[pos][:, None] == s[neg][None, :])

    ka, kb = kernel(a), kernel(b)
    v10 = np.array([ka.mean(axis=1), kb.mean(axis=1)])
    v01 = np.array([ka.mean(axis=0), kb.mean(axis=0)])
    cov = np.cov(v10) / pos.sum() + np.cov(v01) / neg.sum()
    comparison = sequential.paired_auc(y, a, b)
    assert comparison.auc_champion == pytest.approx(ka.mean())
    assert comparison.auc_diff_se == pytest.approx(np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))


def _bootstrap_sd(draw: object, seed: int, n_boot: int = 250) -> float:
    rng = np.random.default_rng(seed)
    return float(np.std([draw(rng) for _ in range(n_boot)], ddof=1))  # type: ignore[operator]


def test_paired_delong_agrees_with_sklearn_and_a_paired_bootstrap() -> None:
    y, a, b = scored(1500, seed=4, noise=(1.2, 0.8))
    comparison = sequential.paired_auc(y, a, b)
    assert comparison.auc_champion == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert comparison.auc_diff == pytest.approx(roc_auc_score(y, b) - roc_auc_score(y, a))

    def paired(rng: np.random.Generator) -> float:
        i = rng.integers(0, len(y), len(y))
        return roc_auc_score(y[i], b[i]) - roc_auc_score(y[i], a[i])

    assert comparison.auc_diff_se == pytest.approx(_bootstrap_sd(paired, seed=5), rel=0.15)
    low, high = comparison.auc_diff_ci or (np.nan, np.nan)
    assert low < comparison.auc_diff < high
    assert high - low == pytest.approx(2 * 1.959964 * comparison.auc_diff_se, rel=1e-5)


def test_unpaired_delong_agrees_with_sklearn_and_a_two_sample_bootstrap() -> None:
    y_a, a, _ = scored(1200, seed=6)
    y_b, _, b = scored(900, seed=7, noise=(1.0, 0.6))
    comparison = sequential.unpaired_auc(y_a, a, y_b, b)
    assert comparison.auc_diff == pytest.approx(roc_auc_score(y_b, b) - roc_auc_score(y_a, a))

    def two_sample(rng: np.random.Generator) -> float:
        i, j = rng.integers(0, len(y_a), len(y_a)), rng.integers(0, len(y_b), len(y_b))
        return roc_auc_score(y_b[j], b[j]) - roc_auc_score(y_a[i], a[i])

    assert comparison.auc_diff_se == pytest.approx(_bootstrap_sd(two_sample, seed=8), rel=0.15)


def test_auc_is_none_with_one_class_and_the_look_still_works() -> None:
    result = sequential.shadow_test([0.1, 0.3, 0.2], [0.2, 0.1, 0.4], [0, 0, 0])
    assert result.auc_champion is None and result.auc_diff_ci is None
    assert result.outcome == "continue"


# ----------------------------------------------------------------------------------------------
# The confidence sequence and the decision
# ----------------------------------------------------------------------------------------------


def test_p_value_is_below_alpha_exactly_when_the_cs_excludes_zero() -> None:
    rng = np.random.default_rng(9)
    estimate, se = rng.normal(0, 2, 2000), rng.uniform(0.1, 1.0, 2000)
    n = rng.integers(10, 20_000, 2000)
    policy = SequentialPolicy()
    bounds = sequential.sequential_bounds(estimate, se, n, policy)
    excludes = (bounds["cs_lower"] > 0) | (bounds["cs_upper"] < 0)
    assert ((bounds["p_value"] <= policy.alpha) == excludes).all()
    assert 0.2 < excludes.mean() < 0.8  # both kinds of looks are present


def test_the_boundary_is_wider_than_one_fixed_look_and_tightest_near_target_n() -> None:
    rho = sequential.mixture_rho(5000, 0.05)
    widths = sequential.boundary_multiplier(np.array([500, 2500, 5000, 10_000, 40_000]), 0.05, rho)
    assert widths.min() > 1.96 * 1.4
    assert widths[2] == pytest.approx(3.03, abs=0.01)
    assert widths[2] <= widths.min() + 0.02


def test_decision_rule_and_burn_in() -> None:
    policy = SequentialPolicy(min_n=100, max_n=1000)
    outcomes = sequential.decide(
        lower=[0.1, -0.1, -0.1, -0.1, 0.1],
        harm_upper=[0.2, -0.01, 0.1, 0.1, 0.2],
        n=[200, 200, 200, 1000, 50],
        policy=policy,
    )
    assert list(outcomes) == [
        "challenger_better", "challenger_worse", "continue", "inconclusive", "continue"
    ]  # fmt: skip


def test_a_looser_harm_alpha_stops_sooner_for_harm_only() -> None:
    strict, loose = SequentialPolicy(), SequentialPolicy(alpha_harm=0.2)
    a = sequential.sequential_bounds(-0.01, 0.004, 3000, strict)
    b = sequential.sequential_bounds(-0.01, 0.004, 3000, loose)
    assert a["cs_upper"] == b["cs_upper"] and b["harm_upper"] < a["harm_upper"]
    assert a["outcome"] == "continue" and b["outcome"] == "challenger_worse"


def test_identical_models_give_zero_differences_and_no_decision() -> None:
    y, a, _ = scored(2000, seed=10)
    result = sequential.shadow_test(a, a, y, SequentialPolicy(max_n=2000))
    assert result.estimate == 0.0 and result.p_value == 1.0
    assert result.cs_lower == result.cs_upper == 0.0
    assert result.outcome == "inconclusive"


def test_empty_arms_continue_with_an_unbounded_interval() -> None:
    result = sequential.canary_test([0.1, 0.2, 0.3], [0, 1, 0], [], [])
    assert result.n == 3 and result.n_challenger == 0
    assert result.outcome == "continue" and result.p_value == 1.0
    assert result.to_dict()["cs_lower"] is None
    nothing = sequential.shadow_test([], [], [])
    assert (nothing.n, nothing.outcome) == (0, "continue")
    assert json.loads(json.dumps(nothing.to_dict(), allow_nan=False))["estimate"] is None


def test_clear_differences_are_decided_both_ways_in_both_modes() -> None:
    y, weak, strong = scored(4000, seed=11, noise=(2.0, 0.2))
    assert sequential.shadow_test(weak, strong, y).outcome == "challenger_better"
    assert sequential.shadow_test(strong, weak, y).outcome == "challenger_worse"
    half = np.arange(len(y)) % 2 == 0
    better = sequential.canary_test(weak[half], y[half], strong[~half], y[~half])
    worse = sequential.canary_test(strong[half], y[half], weak[~half], y[~half])
    assert (better.outcome, worse.outcome) == ("challenger_better", "challenger_worse")
    assert better.n == 4000 and better.n_champion == better.n_challenger == 2000
    assert better.auc_diff is not None and better.auc_diff > 0


def test_the_result_is_json_serialisable() -> None:
    y, a, b = scored(800, seed=12)
    out = json.loads(json.dumps(sequential.shadow_test(a, b, y).to_dict(), allow_nan=False))
    assert out["mode"] == "shadow" and out["metric"] == sequential.DEFAULT_METRIC
    assert len(out["auc_diff_ci"]) == 2 and 0 <= out["p_value"] <= 1
