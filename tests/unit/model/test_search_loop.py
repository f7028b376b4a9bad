"""The one search loop and its budget rule, with candidates that finish at once (no XGBoost)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from readmit.model.train import CandidateResult, Trial, may_start, run_search


def trial(aucs: list[float], seconds: float, complete: bool = True) -> Trial:
    return Trial(params={}, fold_auc=aucs, seconds=seconds, complete=complete)


def test_the_first_candidate_always_starts_and_has_no_deadline() -> None:
    assert may_start(None, [], elapsed_s=1e6, budget_s=1.0, refit_share=1.2) == (True, math.inf)


def test_a_candidate_starts_only_if_one_more_fold_fits_after_the_refit_reserve() -> None:
    best = trial([0.68, 0.69, 0.67], seconds=30.0)  # 10 s per fold
    # 100 s budget - 1.2 x 30 s reserved for the refit - 50 s elapsed = 14 s left: a fold fits.
    ok, left = may_start(best, [best], elapsed_s=50.0, budget_s=100.0, refit_share=1.2)
    assert ok and left == 14.0
    # 5 s later only 9 s are left: one more fold (10 s) would not fit.
    assert may_start(best, [best], elapsed_s=55.0, budget_s=100.0, refit_share=1.2)[0] is False


class Done:
    def __init__(self, value: CandidateResult) -> None:
        self.value = value

    def result(self) -> CandidateResult:
        return self.value


def test_the_loop_races_keeps_slots_busy_and_returns_the_best_complete_trial() -> None:
    outcomes = {0: [0.68, 0.68, 0.68], 1: [0.70, 0.70, 0.70], 2: [0.60], 3: [0.69, 0.69, 0.69]}
    seen: list[tuple[int, list[float] | None]] = []

    def submit(index: int, params: dict[str, Any], against: list[float] | None, left: float):
        seen.append((index, against))
        aucs = outcomes[index]
        done = trial(aucs, seconds=0.01 * len(aucs), complete=len(aucs) == 3)
        oof = np.full(3, float(index)) if done.complete else None
        return Done(CandidateResult(done, oof))

    best, oof, trials = run_search(
        [{"n": i} for i in range(4)], submit, lambda running: running[0], slots=1, budget_s=1e6
    )
    assert best.fold_auc == outcomes[1] and oof.tolist() == [1.0, 1.0, 1.0]
    assert [t.complete for t in trials] == [True, True, False, True]
    # Each candidate races the best complete trial known when it starts.
    assert seen == [(0, None), (1, outcomes[0]), (2, outcomes[1]), (3, outcomes[1])]
