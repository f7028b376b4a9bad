"""Performance before outcomes arrive: confidence-based performance estimation (CBPE).

Outcomes arrive 30 days or more after discharge, so realised ROC AUC always lags the traffic it
judges. If the model is calibrated on a window (P(y=1 | p) = p), its probabilities alone say
what the window's ROC AUC will be: each encounter is a fractional positive (weight p) and a
fractional negative (weight 1 - p), and the expected ROC curve follows from those weights
(the idea behind NannyML's CBPE, written here in numpy).

What it can and cannot see:
- covariate shift (new inputs, same P(y|x)): the probabilities move with the population, so the
  estimate follows the AUC the window will realise;
- concept drift or prior shift (P(y|x) changes): the probabilities do not know, so the estimate
  stays where the model believes it is. Only realised performance (`realised_performance`,
  once outcomes arrive) catches it. Estimation complements labelled monitoring, never replaces it.

The band is the spread of the AUC the window would realise from label noise alone (labels drawn
from the probabilities), so a realised AUC outside it says the window is not calibrated: drift
in P(y|x), or a window too small to judge.

Pure functions on arrays: no I/O, no Prefect, no BentoML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_DRAWS = 400
DEFAULT_LEVEL = 0.9
DRAW_CELLS = 2_000_000
"""Random numbers generated at once (draws x rows): bounds memory (16 MB) for any window."""

ArrayLike = Sequence[float] | np.ndarray


@dataclass(frozen=True)
class PerformanceEstimate:
    """What a window's probabilities say about its performance before outcomes arrive.

    `estimated_auc` is None when the window has no expected positive or no expected negative
    (every probability 0, or every one 1); `low`/`high`/`auc_std` are None when no label draw
    had both classes. `level` is the band's central coverage, `auc_std` the spread of the
    realised AUC from label noise alone (no window-level estimate can be closer on average than
    about 0.8 of it), `n_draws` the draws that had both classes.
    """

    n: int
    estimated_auc: float | None
    low: float | None
    high: float | None
    level: float
    auc_std: float | None
    estimated_prevalence: float
    estimated_brier: float
    n_draws: int

    def covers(self, auc: float | None) -> bool | None:
        """Whether a realised AUC lies in the band (None when either is unknown)."""
        if auc is None or self.low is None or self.high is None:
            return None
        return self.low <= auc <= self.high

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


@dataclass(frozen=True)
class RealisedPerformance:
    """Performance of the labelled part of a window, once outcomes arrived.

    `roc_auc` is None when the labelled rows hold one class only (the AUC is undefined, not 0.5).
    """

    n_labelled: int
    positives: int
    roc_auc: float | None
    prevalence: float | None
    brier: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def check_probabilities(probabilities: ArrayLike) -> np.ndarray:
    """Probabilities as a 1-d float array, refused when empty, NaN/infinite or outside [0, 1]:
    an estimate built on them would be silently wrong."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"probabilities must be one-dimensional, got shape {p.shape}")
    if p.size == 0:
        raise ValueError("probabilities are empty: nothing to estimate")
    bad = ~np.isfinite(p)
    if bad.any():
        raise ValueError(
            f"probabilities contain {int(bad.sum())} NaN or infinite value(s) "
            f"(first at position {int(np.flatnonzero(bad)[0])})"
        )
    if p.min() < 0.0 or p.max() > 1.0:
        outside = int(((p < 0.0) | (p > 1.0)).sum())
        raise ValueError(
            f"probabilities must lie in [0, 1]; {outside} value(s) outside "
            f"(min {p.min():.6g}, max {p.max():.6g})"
        )
    return p


def _check_labels(labels: ArrayLike, n: int) -> np.ndarray:
    """Labels as floats: 0/1 where the outcome arrived, NaN where it has not yet."""
    y = np.asarray(labels, dtype=np.float64)
    if y.shape != (n,):
        raise ValueError(f"{y.size} labels for {n} probabilities: they must match one to one")
    known = ~np.isnan(y)
    if not np.isin(y[known], (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1 (NaN where the outcome has not arrived yet)")
    return y


# ----------------------------------------------------------------------------------------------
# Ranks and AUC
# ----------------------------------------------------------------------------------------------


def _tie_groups(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One sort: each value's group of equal values (groups in ascending order) and the group
    sizes. Everything tie-aware below works on these groups."""
    order = np.argsort(p, kind="stable")
    ordered = p[order]
    starts = np.empty(len(p), dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    groups = np.empty(len(p), dtype=np.intp)
    groups[order] = np.cumsum(starts) - 1
    return groups, np.bincount(groups)


def _average_ranks(groups: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (the Mann-Whitney convention)."""
    ends = np.cumsum(sizes)
    return ((ends - sizes + 1 + ends) / 2.0)[groups]


def rank_auc(labels: ArrayLike, scores: ArrayLike) -> float | None:
    """ROC AUC from ranks (ties count one half), None when only one class is present.

    Equal to `sklearn.metrics.roc_auc_score`; here so a window needs one sort, not one per draw.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if s.size == 0:
        return None
    ranks = _average_ranks(*_tie_groups(s))
    positives = float(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return None
    return float((ranks @ y - positives * (positives + 1) / 2.0) / (positives * negatives))


def _expected_auc(
    p: np.ndarray, groups: np.ndarray, sizes: np.ndarray, exclude_self_pairs: bool
) -> float | None:
    """`expected_auc` on validated probabilities and their tie groups."""
    positive = np.bincount(groups, weights=p, minlength=len(sizes))
    negative = np.bincount(groups, weights=1.0 - p, minlength=len(sizes))
    negative_below = np.cumsum(negative) - negative
    concordant = float(positive @ negative_below + 0.5 * positive @ negative)
    pairs = float(positive.sum() * negative.sum())
    if exclude_self_pairs:
        own = float(p @ (1.0 - p))
        concordant -= 0.5 * own
        pairs -= own
    if pairs <= 0.0:
        return None
    return min(max(concordant / pairs, 0.0), 1.0)


def expected_auc(probabilities: ArrayLike, *, exclude_self_pairs: bool = True) -> float | None:
    """ROC AUC a window will show if its probabilities are calibrated, None if the window
    has no expected positive or negative.

    The expected ROC curve: TPR(t) = sum_{p>=t} p / sum p, FPR(t) = sum_{p>=t} (1-p) / sum (1-p);
    its area, ties counted one half (a tied group is one diagonal step of the curve), is
    sum over pairs of p_i (1 - p_j) [p_i > p_j, one half if equal] / (sum p * sum (1-p)).
    That area (`exclude_self_pairs=False`, what NannyML's CBPE computes) counts each encounter
    once as its own positive and negative. No labelling can pair an encounter with itself, so by
    default those pairs are dropped: then it is the expected number of correctly ordered
    (positive, negative) pairs over the expected number of such pairs. The two differ by O(1/n).

    Raises:
        ValueError: probabilities empty, NaN/infinite or outside [0, 1].
    """
    p = check_probabilities(probabilities)
    return _expected_auc(p, *_tie_groups(p), exclude_self_pairs)


def _simulated_aucs(
    p: np.ndarray, ranks: np.ndarray, n_draws: int, rng: np.random.Generator
) -> np.ndarray:
    """`simulated_aucs` on validated probabilities and their average ranks."""
    chunk = max(1, DRAW_CELLS // len(p))
    aucs = []
    for start in range(0, n_draws, chunk):
        draws = rng.random((min(chunk, n_draws - start), len(p))) < p
        positives = draws.sum(axis=1, dtype=np.float64)
        negatives = len(p) - positives
        rank_sums = draws @ ranks
        valid = (positives > 0) & (negatives > 0)
        u = rank_sums[valid] - positives[valid] * (positives[valid] + 1) / 2.0
        aucs.append(u / (positives[valid] * negatives[valid]))
    return np.concatenate(aucs)


def _generator(seed: int | np.random.Generator | None) -> np.random.Generator:
    """A seed or a caller's generator (to chain draws across windows reproducibly)."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def simulated_aucs(
    probabilities: ArrayLike,
    *,
    n_draws: int = DEFAULT_DRAWS,
    seed: int | np.random.Generator | None = 0,
) -> np.ndarray:
    """ROC AUCs of `n_draws` labellings y ~ Bernoulli(p): what the window would realise from
    label noise alone if the model were calibrated on it. Draws with one class only are left
    out (their AUC is undefined), so the result may be shorter than `n_draws`.

    Vectorised: one sort of the window, then each draw's AUC is a dot product with the ranks.

    Raises:
        ValueError: invalid probabilities, or `n_draws` below 1.
    """
    p = check_probabilities(probabilities)
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    return _simulated_aucs(p, _average_ranks(*_tie_groups(p)), n_draws, _generator(seed))


def estimate_performance(
    probabilities: ArrayLike,
    *,
    level: float = DEFAULT_LEVEL,
    n_draws: int = DEFAULT_DRAWS,
    seed: int | np.random.Generator | None = 0,
) -> PerformanceEstimate:
    """CBPE for one window of served probabilities (score the cohort rows the realised figures
    will be computed on): expected ROC AUC, a central `level` band of the AUC the window would
    realise under calibration, the expected prevalence (mean p) and expected Brier score
    (mean p(1-p)). Deterministic for a given seed.

    Raises:
        ValueError: probabilities empty, NaN/infinite or outside [0, 1]; `level` not in
            (0, 1); `n_draws` below 1.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level}")
    if n_draws < 1:
        raise ValueError(f"n_draws must be at least 1, got {n_draws}")
    p = check_probabilities(probabilities)
    groups, sizes = _tie_groups(p)
    auc = _expected_auc(p, groups, sizes, exclude_self_pairs=True)
    draws = _simulated_aucs(p, _average_ranks(groups, sizes), n_draws, _generator(seed))
    low = high = std = None
    if len(draws):
        tail = (1.0 - level) / 2.0
        low, high = (float(q) for q in np.quantile(draws, [tail, 1.0 - tail]))
        std = float(draws.std(ddof=1)) if len(draws) > 1 else 0.0
    return PerformanceEstimate(
        n=len(p),
        estimated_auc=auc,
        low=low,
        high=high,
        level=level,
        auc_std=std,
        estimated_prevalence=float(p.mean()),
        estimated_brier=float(p @ (1.0 - p) / len(p)),
        n_draws=len(draws),
    )


def realised_performance(probabilities: ArrayLike, labels: ArrayLike) -> RealisedPerformance:
    """ROC AUC, prevalence and Brier score of the rows whose outcome has arrived (labels 0/1,
    NaN for not yet): what the estimate is judged against.

    Raises:
        ValueError: invalid probabilities, or labels not 0/1/NaN or not one per probability.
    """
    p = check_probabilities(probabilities)
    y = _check_labels(labels, len(p))
    known = ~np.isnan(y)
    p, y = p[known], y[known]
    if not len(y):
        return RealisedPerformance(0, 0, None, None, None)
    return RealisedPerformance(
        n_labelled=len(y),
        positives=int(y.sum()),
        roc_auc=rank_auc(y, p),
        prevalence=float(y.mean()),
        brier=float(np.mean((y - p) ** 2)),
    )


def label_coverage(n_predictions: int, n_with_outcome: int) -> float:
    """Share of a window's predictions whose outcome has arrived: how far realised performance
    can be trusted yet (0 for a window with no predictions).

    Raises:
        ValueError: negative counts, or more outcomes than predictions.
    """
    if n_predictions < 0 or n_with_outcome < 0:
        raise ValueError("counts must not be negative")
    if n_with_outcome > n_predictions:
        raise ValueError(
            f"{n_with_outcome} outcomes for {n_predictions} predictions: an outcome must "
            "belong to a prediction"
        )
    return n_with_outcome / n_predictions if n_predictions else 0.0
