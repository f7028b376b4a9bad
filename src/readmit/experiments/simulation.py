"""Simulated live experiments with a KNOWN truth: what the sequential test decides, and when.

The world, sized like the shipped feed:

* each encounter has a latent risk factor x ~ N(0, 1) and a true risk
  p = expit(TRUE_INTERCEPT + TRUE_SLOPE * x): base rate 0.11, and a model that knew p would
  reach ROC AUC 0.70 (the ceiling; the honest models on this data reach 0.66 to 0.68);
* a model sees x through Gaussian noise of its own (`ModelSpec.noise`) and reports the
  probability of readmission GIVEN what it saw, so every model is calibrated and models differ
  in discrimination only; `logit_shift` then miscalibrates one on purpose;
* the champion's noise gives ROC AUC 0.68. An A/A challenger (`SAME`) is a second model of the
  same quality: noise of the same size, drawn independently (an identical model would make every
  loss difference 0 and test nothing). `BETTER` has less noise (+0.01 AUC), `WORSE` more
  (-0.02 AUC), `MISCALIBRATED` the champion's quality but probabilities 35% too high in odds,
  `BROKEN` 2.7 times too high.
  The AUCs were solved numerically once; `population_auc` measures them, the benchmark reports
  them;
* outcomes mature in daily batches (Poisson, `ENCOUNTERS_PER_DAY` on average) and the test
  looks after each, until it decides or reaches `max_n` encounters. The 30-day maturation delay
  adds a constant to the calendar time and changes nothing else, so it is left out;
* canary: each encounter is answered by the challenger with probability `canary_share`.
  Encounters are independent here; a real canary is sticky per patient (1.4 encounters per
  patient on average), which the test ignores as well.

Experiments are simulated as (experiments x encounters) matrices, in chunks, and judged by the
same array functions as one live look (`sequential.sequential_bounds`), so the figures measure
the rule the flow runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from readmit.experiments import sequential
from readmit.experiments.sequential import Mode, SequentialPolicy

TRUE_INTERCEPT = -2.3066
TRUE_SLOPE = 0.7650
"""True risk = expit(TRUE_INTERCEPT + TRUE_SLOPE * x), x ~ N(0, 1): mean 0.110, ROC AUC 0.700."""
ENCOUNTERS_PER_DAY = sequential.ENCOUNTERS_PER_YEAR / 365.0
"""About 28 outcomes mature a day: the size of one daily batch."""
CHUNK_CELLS = 600_000
"""Encounters simulated at once (experiments x encounters): bounds memory to tens of MB."""
_GRID_POINTS = 4001
_HERMITE = np.polynomial.hermite_e.hermegauss(48)


def expit(z: np.ndarray) -> np.ndarray:
    """The logistic function (numpy only; no overflow warning for large |z|)."""
    return np.exp(-np.logaddexp(0.0, -z))


@dataclass(frozen=True)
class ModelSpec:
    """A simulated model: it sees the risk factor through Gaussian noise of SD `noise` and
    reports P(readmission | what it saw), shifted by `logit_shift` (positive: over-predicts).
    `shared_noise` is the correlation of its noise with the champion's (1 with the champion's
    noise size: the same model)."""

    name: str
    noise: float
    logit_shift: float = 0.0
    shared_noise: float = 0.0


CHAMPION = ModelSpec("champion", noise=0.4917)
"""ROC AUC 0.680, the tuned XGBoost of this data."""
SAME = ModelSpec("same", noise=0.4917)
BETTER = ModelSpec("better", noise=0.3337)
"""ROC AUC 0.690: +0.01 over the champion."""
WORSE = ModelSpec("worse", noise=0.7616)
"""ROC AUC 0.660: -0.02 under the champion."""
MISCALIBRATED = ModelSpec("miscalibrated", noise=0.4917, logit_shift=0.3)
"""The champion's ROC AUC, probabilities 35% too high in odds (mean 0.14 for a 0.11 base rate):
a model trained when readmissions were more frequent."""
BROKEN = ModelSpec("broken", noise=0.4917, logit_shift=1.0)
"""The champion's ranking, probabilities 2.7 times too high in odds (mean 0.24): the kind of
harm a canary exists to catch, a unit or pipeline bug rather than a small loss of skill."""
IDENTICAL = ModelSpec("identical", noise=0.4917, shared_noise=1.0)
"""The champion itself: every loss difference is 0."""


@dataclass(frozen=True)
class Encounters:
    """Simulated encounters, (experiments, encounters) arrays in arrival order."""

    labels: np.ndarray
    champion: np.ndarray
    challenger: np.ndarray


@dataclass(frozen=True)
class SimulatedExperiment:
    """One simulated experiment: its decision, after how many outcomes and days, and the
    public look (`shadow_test`/`canary_test`) on the data it had then."""

    outcome: str
    n: int
    days: int
    result: sequential.ExperimentResult


def predict(spec: ModelSpec, seen: np.ndarray) -> np.ndarray:
    """The model's calibrated probability for what it saw (x + noise), shifted on purpose.

    x | seen ~ N(seen / (1 + s^2), s^2 / (1 + s^2)); the expectation of the true risk over it is
    computed on a grid by Gauss-Hermite quadrature, then interpolated.
    """
    shrink = 1.0 / (1.0 + spec.noise**2)
    reach = 9.0 * np.sqrt(1.0 + spec.noise**2)
    grid = np.linspace(-reach, reach, _GRID_POINTS)
    nodes, weights = _HERMITE
    x = grid[:, None] * shrink + np.sqrt(spec.noise**2 * shrink) * nodes[None, :]
    risk = expit(TRUE_INTERCEPT + TRUE_SLOPE * x) @ (weights / weights.sum())
    logit = np.log(risk) - np.log1p(-risk) + spec.logit_shift
    return np.interp(seen, grid, expit(logit))


def simulate_encounters(
    challenger: ModelSpec,
    n_experiments: int,
    n: int,
    rng: np.random.Generator,
    champion: ModelSpec = CHAMPION,
) -> Encounters:
    """Outcomes and both models' probabilities for `n_experiments` x `n` encounters."""
    shape = (n_experiments, n)
    x = rng.standard_normal(shape)
    labels = (rng.random(shape) < expit(TRUE_INTERCEPT + TRUE_SLOPE * x)).astype(np.float64)
    noise_a = rng.standard_normal(shape)
    c = challenger.shared_noise
    noise_b = c * noise_a + np.sqrt(1.0 - c**2) * rng.standard_normal(shape) if c < 1 else noise_a
    return Encounters(
        labels,
        predict(champion, x + champion.noise * noise_a),
        predict(challenger, x + challenger.noise * noise_b),
    )


def daily_looks(
    n: int, rng: np.random.Generator, per_day: float = ENCOUNTERS_PER_DAY
) -> np.ndarray:
    """Matured outcomes at the end of each day (Poisson batches), up to and including `n`."""
    days = int(n / per_day * 1.5) + 10
    looks = np.unique(np.minimum(np.cumsum(rng.poisson(per_day, days)), n))
    return looks[looks > 0]


def look_outcomes(
    encounters: Encounters,
    looks: np.ndarray,
    mode: Mode,
    policy: SequentialPolicy,
    to_challenger: np.ndarray | None = None,
) -> np.ndarray:
    """The decision at every look of every experiment, (experiments, looks)."""
    losses = sequential.LOSSES[policy.metric]
    loss_a = losses(encounters.champion, encounters.labels)
    loss_b = losses(encounters.challenger, encounters.labels)
    if mode == "shadow":
        n, estimate, se = sequential.paired_sequence(loss_a - loss_b, looks)
    else:
        if to_challenger is None:
            raise ValueError("a canary needs `to_challenger`: which encounters it answered")
        n, _, _, estimate, se = sequential.two_sample_sequence(loss_a, loss_b, to_challenger, looks)
    return sequential.sequential_bounds(estimate, se, n, policy)["outcome"]


def first_decisions(outcomes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of the first look that decided, its outcome) per experiment; an experiment that
    reaches its last look undecided ends there (inconclusive once the look reaches max_n)."""
    decided = outcomes != "continue"
    first = np.where(decided.any(axis=1), decided.argmax(axis=1), outcomes.shape[1] - 1)
    return first, outcomes[np.arange(len(outcomes)), first]


def _assignment(
    mode: Mode, shape: tuple[int, int], share: float, rng: np.random.Generator
) -> np.ndarray | None:
    """Which encounters the challenger answers (canary), None for a shadow."""
    return rng.random(shape) < share if mode == "canary" else None


def run_experiment(
    challenger: ModelSpec,
    *,
    mode: Mode = "shadow",
    policy: SequentialPolicy | None = None,
    seed: int = 0,
    canary_share: float = 0.5,
    champion: ModelSpec = CHAMPION,
) -> SimulatedExperiment:
    """Simulate one experiment, look after every daily batch, stop at the first decision.

    The returned `result` is the public look (`shadow_test` / `canary_test`) on the outcomes
    matured at the deciding look: its outcome is the simulation's.
    """
    policy = policy or SequentialPolicy()
    rng = np.random.default_rng(seed)
    looks = daily_looks(policy.max_n, rng)
    data = simulate_encounters(challenger, 1, policy.max_n, rng, champion)
    arm = _assignment(mode, (1, policy.max_n), canary_share, rng)
    first, outcome = first_decisions(look_outcomes(data, looks, mode, policy, arm))
    n = int(looks[first[0]])
    y, a, b = (v[0, :n] for v in (data.labels, data.champion, data.challenger))
    if arm is None:
        result = sequential.shadow_test(a, b, y, policy)
    else:
        to_b = arm[0, :n]
        result = sequential.canary_test(a[~to_b], y[~to_b], b[to_b], y[to_b], policy)
    return SimulatedExperiment(str(outcome[0]), n, int(first[0]) + 1, result)


@dataclass(frozen=True)
class SimulationSummary:
    """Many simulated experiments of one challenger: per experiment, the outcome, the outcomes
    matured at the decision and the realised ROC AUCs of both models on `max_n` encounters."""

    challenger: ModelSpec
    mode: Mode
    metric: str
    outcomes: np.ndarray
    n_at_decision: np.ndarray
    auc_champion: np.ndarray
    auc_challenger: np.ndarray

    def rate(self, outcome: str) -> float:
        """Share of the experiments that ended with `outcome`."""
        return float(np.mean(self.outcomes == outcome))

    def median_n(self, outcome: str) -> float | None:
        """Median outcomes matured when the experiments ending with `outcome` decided."""
        chosen = self.n_at_decision[self.outcomes == outcome]
        return float(np.median(chosen)) if len(chosen) else None

    def to_dict(self) -> dict[str, Any]:
        """Counts, rates and medians (JSON-serialisable)."""
        names = ("challenger_better", "challenger_worse", "inconclusive", "continue")
        return {
            "challenger": self.challenger.name,
            "mode": self.mode,
            "metric": self.metric,
            "experiments": len(self.outcomes),
            "counts": {name: int(np.sum(self.outcomes == name)) for name in names},
            "median_n": {name: self.median_n(name) for name in names},
            "realised_auc_diff": float(np.mean(self.auc_challenger - self.auc_champion)),
        }


def _realised_aucs(data: Encounters) -> tuple[np.ndarray, np.ndarray]:
    """Each experiment's ROC AUC of the champion and the challenger on all its encounters."""
    aucs = [
        sequential.delong_components(y, [a, b])[0]
        for y, a, b in zip(data.labels, data.champion, data.challenger, strict=True)
    ]
    return np.array([a for a, _ in aucs]), np.array([b for _, b in aucs])


def run_experiments(
    challenger: ModelSpec,
    n_experiments: int,
    *,
    mode: Mode = "shadow",
    policy: SequentialPolicy | None = None,
    seed: int = 0,
    canary_share: float = 0.5,
    champion: ModelSpec = CHAMPION,
) -> SimulationSummary:
    """Simulate `n_experiments` experiments (vectorised in chunks; one looks schedule per
    chunk), each looked at after every daily batch until it decides or reaches `max_n`."""
    policy = policy or SequentialPolicy()
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // policy.max_n)
    parts: list[tuple[np.ndarray, ...]] = []
    for start in range(0, n_experiments, chunk):
        size = min(chunk, n_experiments - start)
        looks = daily_looks(policy.max_n, rng)
        data = simulate_encounters(challenger, size, policy.max_n, rng, champion)
        arm = _assignment(mode, (size, policy.max_n), canary_share, rng)
        first, outcome = first_decisions(look_outcomes(data, looks, mode, policy, arm))
        parts.append((outcome, looks[first], *_realised_aucs(data)))
    outcomes, n_at, auc_a, auc_b = (np.concatenate(column) for column in zip(*parts, strict=True))
    return SimulationSummary(challenger, mode, policy.metric, outcomes, n_at, auc_a, auc_b)


def population_auc(spec: ModelSpec, n: int = 1_000_000, seed: int = 0) -> float:
    """The ROC AUC a model reaches on the population, free of label noise: its probabilities
    ordered against the true risks (each encounter a positive with weight p, a negative with
    weight 1 - p)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n)
    risk = expit(TRUE_INTERCEPT + TRUE_SLOPE * x)
    order = np.argsort(predict(spec, x + spec.noise * rng.standard_normal(n)), kind="stable")
    positive = risk[order]
    negative = 1.0 - positive
    concordant = positive @ (np.cumsum(negative) - negative)
    return float(concordant / (positive.sum() * negative.sum()))
