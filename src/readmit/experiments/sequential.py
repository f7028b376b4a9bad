"""The statistics that decide a live model experiment, looked at after every batch of outcomes.

A champion serves; a challenger runs beside it in one of two modes:

* **shadow**: both score every encounter, so each matured outcome gives a PAIR of losses and the
  test is on d_i = loss_champion_i - loss_challenger_i (positive: the challenger is better);
* **canary**: a sticky share of patients is answered by the challenger, so each encounter has
  ONE model's loss; the test is on the difference of the two arms' mean losses.

Outcomes mature 30+ days after discharge and arrive in daily batches, and a flow looks after
each. A fixed-n test looked at daily rejects a true null far more often than its alpha, so the
decision comes from a confidence sequence (CS): an interval around the mean loss difference that
covers the truth at EVERY look at once with probability about 1 - alpha.

The CS is the normal-mixture boundary with a plug-in (running) variance: the asymptotic
confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2024, "Time-uniform
central limit theory and asymptotic confidence sequences", Thm 2.2), i.e. the mixture SPRT of
Johari, Pekelis & Walsh (2017) with its mixing scale in standard-deviation units:

    estimate +- se_n * sqrt((r + 1) / r * (2 log(1 / alpha) + log(r + 1))),   r = rho^2 n,

with rho chosen so the boundary is tightest at `target_n` encounters. The always-valid p-value
is one over the mixture likelihood ratio: p <= alpha exactly when the CS excludes 0, and
P(p_n <= alpha at any look) <= alpha. Canary uses the same boundary on the difference of means
(se^2 = s_champion^2 / n_champion + s_challenger^2 / n_challenger, n = both arms).

Why not an empirical-Bernstein CS (valid at every n, not only asymptotically): it pays for the
RANGE of a loss difference, +-1 for Brier and +-13.8 nats for clipped log loss, while the
differences' standard deviation is about 0.01 to 0.1; it would need several years of outcomes.
The asymptotic CS pays only for the variance. Its price is that validity holds as n grows, so no
decision is taken before `min_n` outcomes, and the A/A simulation (`benchmarks/experiments.py`)
measures the false-positive rate at this data's sizes.

Decision: CS lower > 0 -> challenger_better; upper end of the CS at `alpha_harm` < 0 ->
challenger_worse; n >= max_n -> inconclusive; else continue. With `alpha_harm == alpha` (the
default) both sides come from one two-sided CS, each side crossed under the null with
probability about alpha / 2; a larger `alpha_harm` stops a harmful challenger sooner at the
price of more false harm stops (about alpha_harm / 2).

Alongside, ROC AUC and its difference with DeLong's interval: FIXED-n, NOT anytime-valid (read it,
do not decide on it).

Pure functions on arrays: no I/O, no Prefect, no BentoML.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal, cast

import numpy as np

Mode = Literal["shadow", "canary"]
Metric = Literal["log_loss", "brier"]
Outcome = Literal["challenger_better", "challenger_worse", "inconclusive", "continue"]
ArrayLike = Sequence[float] | np.ndarray

ENCOUNTERS_PER_YEAR = 10_177
"""Encounters a year in the shipped feed (101,766 over ten years, about 28 a day): the scale of
every default below."""
DEFAULT_MAX_N = ENCOUNTERS_PER_YEAR
"""An experiment that has not decided after one year of matured outcomes is inconclusive: a
longer one judges a challenger trained on data older than the feed it serves. What a year buys
(`benchmarks/experiments.py`): a shadow challenger better by 0.01 ROC AUC is found in about a
third of experiments when its errors are independent of the champion's (0.6 at two years, 0.84
at three), in 95% when they are correlated as a retrained model's are; a canary finds nothing
that small (see `simulation`)."""
DEFAULT_MIN_N = 500
"""No decision before this many outcomes (about 18 days, 55 readmissions). A guard more than a
correction: in 2,000 simulated A/A experiments the boundary alone decided nothing earlier (min_n
30 and 500 gave the same decisions), but its validity is asymptotic, and the first weeks of a
real experiment can be a burst of unusual encounters."""
DEFAULT_ALPHA = 0.05
DEFAULT_METRIC: Metric = "log_loss"
"""Log loss, because the figures support it (`benchmarks/experiments.py`, 400 shadow
experiments per scenario, the same simulated data for both metrics): a +0.01 AUC challenger is
found within a year in 32% of experiments with log loss against 26% with the Brier score, a
-0.02 AUC one stopped in 65% against 54%, at A/A false-positive rates of 2.8% and 1.5% (both
under alpha). Log loss is also what the models are trained on, and it weighs the errors on rare
high risks that the Brier score barely sees."""
CLIP = 1e-6
"""Probabilities are clipped to [CLIP, 1 - CLIP] in the log loss: a confident wrong 0 or 1 costs
13.8 nats instead of infinity, so one encounter cannot decide an experiment."""
AUC_LEVEL = 0.95


@dataclass(frozen=True)
class SequentialPolicy:
    """How an experiment is decided (see the module doc); defaults are one year, alpha 0.05."""

    metric: Metric = DEFAULT_METRIC
    alpha: float = DEFAULT_ALPHA
    alpha_harm: float = DEFAULT_ALPHA
    max_n: int = DEFAULT_MAX_N
    min_n: int = DEFAULT_MIN_N
    target_n: int | None = None
    """Encounters at which the boundary is tightest; None: max_n / 2. The boundary is flat
    around it (its width changes by a few per cent between max_n / 4 and max_n); simulated
    power at one year was the same for all three, earlier targets deciding a little sooner."""

    def __post_init__(self) -> None:
        if self.metric not in LOSSES:
            raise ValueError(f"metric must be one of {sorted(LOSSES)}, got {self.metric!r}")
        for name in ("alpha", "alpha_harm"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be strictly between 0 and 1")
        if not 1 <= self.min_n <= self.max_n:
            raise ValueError(f"need 1 <= min_n <= max_n, got {self.min_n} and {self.max_n}")
        if self.target_n is not None and self.target_n < 1:
            raise ValueError(f"target_n must be at least 1, got {self.target_n}")

    def rho(self, alpha: float) -> float:
        """Mixing scale of the boundary at `alpha`, tightest at `target_n`."""
        return mixture_rho(self.target_n or max(self.max_n // 2, 1), alpha)


@dataclass(frozen=True)
class AucComparison:
    """ROC AUCs of the champion and challenger and DeLong's interval of their difference
    (challenger - champion) at `level`: FIXED-n, not anytime-valid. AUCs are None when the
    labels hold one class only."""

    auc_champion: float | None
    auc_challenger: float | None
    auc_diff: float | None
    auc_diff_se: float | None
    auc_diff_ci: tuple[float, float] | None
    level: float = AUC_LEVEL


@dataclass(frozen=True)
class ExperimentResult:
    """One look at an experiment: the decision and what it rests on, for artifacts and events.

    `estimate` is the mean loss of the champion minus that of the challenger (positive: the
    challenger is better); `cs_lower`/`cs_upper` its anytime-valid confidence sequence at
    `alpha`, `harm_upper` the upper end at `alpha_harm` (equal to `cs_upper` by default);
    `p_value` the always-valid p-value of "no difference". `n` counts encounters with matured
    outcomes (both arms in canary). The `auc_*` fields are fixed-n DeLong figures, NOT
    anytime-valid: context, never the decision.
    """

    mode: Mode
    n: int
    outcome: Outcome
    estimate: float
    cs_lower: float
    cs_upper: float
    harm_upper: float
    p_value: float
    alpha: float
    alpha_harm: float
    metric: Metric
    n_champion: int
    n_challenger: int
    auc_champion: float | None
    auc_challenger: float | None
    auc_diff: float | None
    auc_diff_ci: tuple[float, float] | None
    auc_level: float = AUC_LEVEL

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (an unknown estimate or unbounded interval becomes None)."""
        out = asdict(self)
        for key in ("estimate", "cs_lower", "cs_upper", "harm_upper"):
            out[key] = out[key] if np.isfinite(out[key]) else None
        out["auc_diff_ci"] = None if self.auc_diff_ci is None else list(self.auc_diff_ci)
        return out


# ----------------------------------------------------------------------------------------------
# Validation and per-encounter losses
# ----------------------------------------------------------------------------------------------


def check_predictions(probabilities: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, ...]:
    """(probabilities, labels) as 1-d float arrays, refused when the lengths differ, a label is
    not 0/1, or a probability is NaN or outside [0, 1]: a decision on them would be wrong."""
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if p.ndim != 1 or y.ndim != 1:
        raise ValueError(f"probabilities and labels must be 1-d, got {p.shape} and {y.shape}")
    if p.shape != y.shape:
        raise ValueError(f"{len(p)} probabilities for {len(y)} labels: they must match one to one")
    if np.isnan(p).any():
        raise ValueError(f"probabilities contain {int(np.isnan(p).sum())} NaN value(s)")
    if len(p) and (p.min() < 0.0 or p.max() > 1.0):
        raise ValueError(f"probabilities must lie in [0, 1] (min {p.min():.6g}, max {p.max():.6g})")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1 (matured outcomes only: no NaN)")
    return p, y


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-encounter log loss (nats), probabilities clipped to [CLIP, 1 - CLIP]."""
    p = np.clip(probabilities, CLIP, 1.0 - CLIP)
    return -(labels * np.log(p) + (1.0 - labels) * np.log1p(-p))


def brier(probabilities: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-encounter Brier score (squared error of the probability)."""
    return (probabilities - labels) ** 2


LOSSES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "log_loss": log_loss,
    "brier": brier,
}
"""The per-encounter scores an experiment can be decided on (both proper: lower is better)."""


def encounter_losses(probabilities: ArrayLike, labels: ArrayLike, metric: Metric) -> np.ndarray:
    """Validated per-encounter losses under `metric` (see `LOSSES`)."""
    if metric not in LOSSES:
        raise ValueError(f"metric must be one of {sorted(LOSSES)}, got {metric!r}")
    return LOSSES[metric](*check_predictions(probabilities, labels))


# ----------------------------------------------------------------------------------------------
# The confidence sequence (array-friendly: the simulation evaluates every look at once)
# ----------------------------------------------------------------------------------------------


def mixture_rho(target_n: float, alpha: float) -> float:
    """Mixing scale that makes the boundary tightest at `target_n` (Waudby-Smith et al. 2024)."""
    log_term = -2.0 * np.log(alpha)
    return float(np.sqrt((log_term + np.log(log_term + 1.0)) / target_n))


def boundary_multiplier(n: np.ndarray | float, alpha: float, rho: float) -> np.ndarray:
    """Half-width of the confidence sequence in standard errors after `n` encounters (about
    3.0 near `target_n` at alpha 0.05, against 1.96 for one fixed-n look)."""
    r = rho**2 * np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.sqrt((r + 1.0) / r * (2.0 * np.log(1.0 / alpha) + np.log1p(r)))


def _z(estimate: np.ndarray, se: np.ndarray) -> np.ndarray:
    """estimate / se, infinite when se is 0 and the estimate is not (0 when both are)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(estimate) / se
    return np.where(estimate == 0.0, 0.0, z)


def always_valid_p(estimate: Any, se: Any, n: Any, rho: float) -> np.ndarray:
    """1 / (normal-mixture likelihood ratio), capped at 1: at most alpha exactly when the CS at
    alpha (same rho) excludes 0."""
    r = rho**2 * np.asarray(n, dtype=np.float64)
    z = _z(np.asarray(estimate, dtype=np.float64), np.asarray(se, dtype=np.float64))
    log_ratio = -0.5 * np.log1p(r) + r / (1.0 + r) * z**2 / 2.0
    return np.exp(-np.maximum(log_ratio, 0.0))


def confidence_sequence(
    estimate: Any, se: Any, n: Any, alpha: float, rho: float
) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of the anytime-valid CS at `alpha`; (-inf, inf) where se is unknown."""
    half = np.asarray(se, dtype=np.float64) * boundary_multiplier(n, alpha, rho)
    half = np.where(np.isnan(half), np.inf, half)
    return estimate - half, estimate + half


def decide(lower: Any, harm_upper: Any, n: Any, policy: SequentialPolicy) -> np.ndarray:
    """The rule of the module doc, elementwise: one outcome string per look."""
    n = np.asarray(n)
    ready = n >= policy.min_n
    return np.select(
        [ready & (np.asarray(lower) > 0.0), ready & (np.asarray(harm_upper) < 0.0)],
        ["challenger_better", "challenger_worse"],
        default=np.where(n >= policy.max_n, "inconclusive", "continue"),
    )


def mean_and_variance(total: Any, total_sq: Any, n: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample variance (ddof 1) from running sums; variance NaN below two values.

    Losses are O(1) and n at most millions, so the sums keep about ten significant digits.
    """
    n = np.asarray(n, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.asarray(total) / n
        variance = (np.asarray(total_sq) - n * mean**2) / (n - 1.0)
    return mean, np.where(n >= 2, np.maximum(variance, 0.0), np.nan)


def sequential_bounds(
    estimate: Any, se: Any, n: Any, policy: SequentialPolicy
) -> dict[str, np.ndarray]:
    """CS at alpha, harm bound at alpha_harm, always-valid p-value and outcome of each look."""
    rho = policy.rho(policy.alpha)
    lower, upper = confidence_sequence(estimate, se, n, policy.alpha, rho)
    harm_rho = policy.rho(policy.alpha_harm)
    harm_upper = confidence_sequence(estimate, se, n, policy.alpha_harm, harm_rho)[1]
    p_value = np.where(np.isnan(se), 1.0, always_valid_p(estimate, se, n, rho))
    return {
        "cs_lower": lower,
        "cs_upper": upper,
        "harm_upper": harm_upper,
        "p_value": p_value,
        "outcome": decide(lower, harm_upper, n, policy),
    }


# ----------------------------------------------------------------------------------------------
# Estimates at each look, from running sums (one experiment or a matrix of simulated ones)
# ----------------------------------------------------------------------------------------------


def _at_looks(values: np.ndarray, looks: np.ndarray) -> np.ndarray:
    """Sums of the first `looks[k]` values along the last axis (0 for a look at 0)."""
    running = np.cumsum(values, axis=-1)
    padded = np.concatenate([np.zeros((*running.shape[:-1], 1)), running], axis=-1)
    return padded[..., looks]


def paired_sequence(
    differences: np.ndarray, looks: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, mean, standard error) of the paired differences at each look.

    Args:
        differences: Loss differences in arrival order, 1-d or (experiments, encounters).
        looks: Encounters with matured outcomes at each look, increasing.
    """
    at = np.asarray(looks, dtype=np.intp)
    mean, variance = mean_and_variance(
        _at_looks(differences, at), _at_looks(differences**2, at), at
    )
    with np.errstate(invalid="ignore"):
        se = np.sqrt(variance / at)
    return np.broadcast_to(at, mean.shape), mean, se


def two_sample_sequence(
    champion_loss: np.ndarray,
    challenger_loss: np.ndarray,
    to_challenger: np.ndarray,
    looks: ArrayLike,
) -> tuple[np.ndarray, ...]:
    """(n, n_champion, n_challenger, difference of mean losses, its standard error) at each look.

    Each encounter counts for the arm that answered it (`to_challenger`); the other arm's loss
    at that position is ignored (in a real canary it does not exist).
    """
    at = np.asarray(looks, dtype=np.intp)
    arms = []
    for loss, mask in ((champion_loss, ~to_challenger), (challenger_loss, to_challenger)):
        kept = np.where(mask, loss, 0.0)
        count = _at_looks(mask.astype(np.float64), at)
        arms.append((count, *mean_and_variance(_at_looks(kept, at), _at_looks(kept**2, at), count)))
    (n_a, mean_a, var_a), (n_b, mean_b, var_b) = arms
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(var_a / n_a + var_b / n_b)
    n = np.broadcast_to(at, mean_a.shape)
    return n, n_a.astype(np.int64), n_b.astype(np.int64), mean_a - mean_b, se


# ----------------------------------------------------------------------------------------------
# ROC AUC with DeLong's variance (fixed-n)
# ----------------------------------------------------------------------------------------------


def midranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank; one sort, O(n log n)."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(values)])
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(starts + (sizes + 1) / 2.0, sizes)
    return ranks


def delong_components(
    labels: np.ndarray, scores: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AUC of each score, structural components over positives, over negatives), the fast
    midrank form of DeLong, DeLong & Clarke-Pearson (1988) by Sun & Xu (2014).

    A positive's component is the share of negatives scored below it (ties one half), a
    negative's the share of positives scored above it; each AUC is the mean of either.
    """
    positive = labels == 1
    m, n = int(positive.sum()), int((~positive).sum())
    over_positives, over_negatives = [], []
    for score in scores:
        together = midranks(score)
        over_positives.append((together[positive] - midranks(score[positive])) / n)
        over_negatives.append(1.0 - (together[~positive] - midranks(score[~positive])) / m)
    v10, v01 = np.array(over_positives), np.array(over_negatives)
    return v10.mean(axis=1), v10, v01


def _auc_and_covariance(
    labels: np.ndarray, scores: Sequence[np.ndarray]
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """AUCs (None with one class) and DeLong's covariance matrix (None below 2 of a class)."""
    m = int((labels == 1).sum())
    n = len(labels) - m
    if m == 0 or n == 0:
        return None, None
    aucs, v10, v01 = delong_components(labels, scores)
    if m < 2 or n < 2:
        return aucs, None
    return aucs, np.atleast_2d(np.cov(v10)) / m + np.atleast_2d(np.cov(v01)) / n


def _comparison(auc_a: float, auc_b: float, variance: float | None, level: float) -> AucComparison:
    """Challenger minus champion with its normal interval at `level`."""
    diff = auc_b - auc_a
    if variance is None:
        return AucComparison(auc_a, auc_b, diff, None, None, level)
    se = float(np.sqrt(max(variance, 0.0)))
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    return AucComparison(auc_a, auc_b, diff, se, (diff - z * se, diff + z * se), level)


def paired_auc(
    labels: ArrayLike, champion: ArrayLike, challenger: ArrayLike, level: float = AUC_LEVEL
) -> AucComparison:
    """ROC AUCs of two models scored on the same encounters and DeLong's paired interval of
    their difference (fixed-n, not anytime-valid)."""
    a, y = check_predictions(champion, labels)
    b, _ = check_predictions(challenger, labels)
    aucs, cov = _auc_and_covariance(y, [a, b])
    if aucs is None:
        return AucComparison(None, None, None, None, None, level)
    variance = None if cov is None else float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    return _comparison(float(aucs[0]), float(aucs[1]), variance, level)


def unpaired_auc(
    champion_labels: ArrayLike,
    champion: ArrayLike,
    challenger_labels: ArrayLike,
    challenger: ArrayLike,
    level: float = AUC_LEVEL,
) -> AucComparison:
    """ROC AUCs of two models scored on different encounters and the interval of their
    difference from the two independent DeLong variances (fixed-n, not anytime-valid)."""
    a, y_a = check_predictions(champion, champion_labels)
    b, y_b = check_predictions(challenger, challenger_labels)
    auc_a, var_a = _auc_and_covariance(y_a, [a])
    auc_b, var_b = _auc_and_covariance(y_b, [b])
    if auc_a is None or auc_b is None:
        return AucComparison(
            None if auc_a is None else float(auc_a[0]),
            None if auc_b is None else float(auc_b[0]),
            None, None, None, level,
        )  # fmt: skip
    variance = None if var_a is None or var_b is None else float(var_a[0, 0] + var_b[0, 0])
    return _comparison(float(auc_a[0]), float(auc_b[0]), variance, level)


# ----------------------------------------------------------------------------------------------
# One look at an experiment
# ----------------------------------------------------------------------------------------------


def _result(
    mode: Mode, looked: tuple[np.ndarray, ...], auc: AucComparison, policy: SequentialPolicy
) -> ExperimentResult:
    """The result of the look `looked` = (n, n_champion, n_challenger, estimate, se)."""
    n, n_a, n_b, estimate, se = (np.asarray(v).reshape(-1)[-1] for v in looked)
    bounds = sequential_bounds(estimate, se, n, policy)
    return ExperimentResult(
        mode=mode,
        n=int(n),
        outcome=cast(Outcome, str(bounds["outcome"])),
        estimate=float(estimate),
        cs_lower=float(bounds["cs_lower"]),
        cs_upper=float(bounds["cs_upper"]),
        harm_upper=float(bounds["harm_upper"]),
        p_value=float(bounds["p_value"]),
        alpha=policy.alpha,
        alpha_harm=policy.alpha_harm,
        metric=policy.metric,
        n_champion=int(n_a),
        n_challenger=int(n_b),
        auc_champion=auc.auc_champion,
        auc_challenger=auc.auc_challenger,
        auc_diff=auc.auc_diff,
        auc_diff_ci=auc.auc_diff_ci,
        auc_level=auc.level,
    )


def shadow_test(
    champion: ArrayLike,
    challenger: ArrayLike,
    labels: ArrayLike,
    policy: SequentialPolicy | None = None,
) -> ExperimentResult:
    """Decide a shadow experiment on every encounter whose outcome has matured (both models
    scored each one): the paired test on loss differences, plus the paired DeLong figures.

    Args:
        champion: The champion's probabilities, one per encounter.
        challenger: The challenger's probabilities for the same encounters, same order.
        labels: The matured outcomes, 0/1.
        policy: Metric, alphas, burn-in and horizon; default `SequentialPolicy()`.

    Raises:
        ValueError: lengths differ, a label is not 0/1, a probability is NaN or outside [0, 1].
    """
    policy = policy or SequentialPolicy()
    loss_a = encounter_losses(champion, labels, policy.metric)
    loss_b = encounter_losses(challenger, labels, policy.metric)
    n, mean, se = paired_sequence(loss_a - loss_b, [len(loss_a)])
    count = np.asarray([len(loss_a)])
    auc = paired_auc(labels, champion, challenger)
    return _result("shadow", (n, count, count, mean, se), auc, policy)


def canary_test(
    champion: ArrayLike,
    champion_labels: ArrayLike,
    challenger: ArrayLike,
    challenger_labels: ArrayLike,
    policy: SequentialPolicy | None = None,
) -> ExperimentResult:
    """Decide a canary experiment: the encounters the champion answered and those the
    challenger answered (matured outcomes only), compared by their mean losses, plus the
    independent-sample DeLong figures.

    Raises:
        ValueError: an arm's probabilities and labels differ in length, a label is not 0/1, a
            probability is NaN or outside [0, 1].
    """
    policy = policy or SequentialPolicy()
    loss_a = encounter_losses(champion, champion_labels, policy.metric)
    loss_b = encounter_losses(challenger, challenger_labels, policy.metric)
    arm = np.r_[np.zeros(len(loss_a), dtype=bool), np.ones(len(loss_b), dtype=bool)]
    losses = np.r_[loss_a, loss_b]
    looked = two_sample_sequence(losses, losses, arm, [len(arm)])
    auc = unpaired_auc(champion_labels, champion, challenger_labels, challenger)
    return _result("canary", looked, auc, policy)
