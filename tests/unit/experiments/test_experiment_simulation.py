"""Simulated experiments with a known truth: the simulated world is what it claims to be, and
the sequential test keeps its promises in it (A/A error rate, coverage, power on clear cases).
Small experiments (max_n 3,000) keep these fast."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from readmit.experiments import sequential, simulation
from readmit.experiments.sequential import SequentialPolicy

SMALL = SequentialPolicy(max_n=3000, min_n=300)
CLEARLY_BETTER = simulation.ModelSpec("clearly better", noise=0.0)  # the true risk, AUC 0.70
WEAK = simulation.ModelSpec("weak", noise=1.2)  # AUC about 0.63
CLEARLY_WORSE = simulation.BROKEN


def test_the_simulated_world_has_this_data_s_base_rate_and_auc_ceiling() -> None:
    rng = np.random.default_rng(0)
    data = simulation.simulate_encounters(simulation.SAME, 4, 50_000, rng)
    assert data.labels.mean() == pytest.approx(0.11, abs=0.003)
    # every model is calibrated: its mean probability is the base rate
    assert data.champion.mean() == pytest.approx(data.labels.mean(), abs=0.003)
    assert data.challenger.mean() == pytest.approx(data.labels.mean(), abs=0.003)
    auc = simulation.population_auc
    assert auc(CLEARLY_BETTER, n=300_000) == pytest.approx(0.70, abs=0.003)
    assert auc(simulation.CHAMPION, n=300_000) == pytest.approx(0.68, abs=0.003)
    gain = auc(simulation.BETTER, n=300_000) - auc(simulation.CHAMPION, n=300_000)
    assert gain == pytest.approx(0.01, abs=0.002)


def test_daily_looks_are_about_28_outcomes_apart_and_end_at_n() -> None:
    looks = simulation.daily_looks(10_177, np.random.default_rng(1))
    assert looks[-1] == 10_177 and (np.diff(looks) > 0).all()
    assert 330 <= len(looks) <= 400


def test_aa_false_positive_rate_stays_below_alpha() -> None:
    summary = simulation.run_experiments(simulation.SAME, 300, policy=SMALL, seed=2)
    assert summary.rate("continue") == 0.0
    assert 1 - summary.rate("inconclusive") <= SMALL.alpha + 0.02
    canary = simulation.run_experiments(simulation.SAME, 200, mode="canary", policy=SMALL, seed=3)
    assert 1 - canary.rate("inconclusive") <= SMALL.alpha + 0.02


def test_the_confidence_sequence_covers_the_true_mean_at_every_look() -> None:
    policy, rng = SMALL, np.random.default_rng(4)
    truth = simulation.simulate_encounters(simulation.BETTER, 4, 250_000, rng)
    loss = sequential.LOSSES[policy.metric]
    true_mean = (loss(truth.champion, truth.labels) - loss(truth.challenger, truth.labels)).mean()
    assert true_mean > 0  # a better challenger has a lower log loss
    looks = simulation.daily_looks(policy.max_n, rng)
    data = simulation.simulate_encounters(simulation.BETTER, 200, policy.max_n, rng)
    d = loss(data.champion, data.labels) - loss(data.challenger, data.labels)
    n, mean, se = sequential.paired_sequence(d, looks)
    lower, upper = sequential.confidence_sequence(
        mean, se, n, policy.alpha, policy.rho(policy.alpha)
    )
    missed = ((lower > true_mean) | (upper < true_mean))[:, looks >= policy.min_n].any(axis=1)
    assert missed.mean() <= policy.alpha + 0.02


def test_a_clearly_better_challenger_is_decided_better() -> None:
    summary = simulation.run_experiments(CLEARLY_BETTER, 40, policy=SMALL, seed=5, champion=WEAK)
    assert summary.rate("challenger_better") >= 0.9
    assert summary.to_dict()["realised_auc_diff"] > 0.05
    one = simulation.run_experiment(CLEARLY_BETTER, policy=SMALL, seed=6, champion=WEAK)
    assert one.outcome == one.result.outcome == "challenger_better"
    assert one.n == one.result.n < SMALL.max_n and one.result.cs_lower > 0


def test_a_clearly_worse_challenger_is_stopped_for_harm_in_both_modes() -> None:
    shadow = simulation.run_experiments(CLEARLY_WORSE, 40, policy=SMALL, seed=7)
    assert shadow.rate("challenger_worse") >= 0.9
    one = simulation.run_experiment(CLEARLY_WORSE, mode="canary", policy=SMALL, seed=8)
    assert one.outcome == one.result.outcome == "challenger_worse"
    assert one.result.n_champion + one.result.n_challenger == one.n


def test_an_identical_challenger_runs_to_the_horizon_without_crashing() -> None:
    one = simulation.run_experiment(simulation.IDENTICAL, policy=SMALL, seed=9)
    assert (one.outcome, one.n) == ("inconclusive", SMALL.max_n)
    assert one.result.estimate == 0.0 and one.result.p_value == 1.0


def test_one_experiment_and_many_take_the_same_decision() -> None:
    policy = dataclasses.replace(SMALL, metric="brier")
    one = simulation.run_experiment(simulation.WORSE, policy=policy, seed=10)
    assert one.result.metric == "brier" and one.outcome == one.result.outcome
    many = simulation.run_experiments(simulation.WORSE, 30, policy=policy, seed=10)
    assert len(many.outcomes) == 30 and many.to_dict()["counts"]["continue"] == 0
    assert many.to_dict()["realised_auc_diff"] == pytest.approx(-0.02, abs=0.01)
