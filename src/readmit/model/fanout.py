"""The XGBoost search fanned out over worker processes (a Dask cluster), candidate by candidate.

Why it is shaped like this:

* A candidate's whole cross-validation is one unit of work (`evaluate_candidate`): a pure
  function of its parameters and the per-fold arrays (`train.FoldArrays`), so it runs in any
  process. Racing still works across the cluster: each candidate is given the best complete
  trial's per-fold AUCs known when it starts and stops after a fold where it trails them.
* The fold arrays are built once, by the same per-fold encoder as the sequential path, and
  shipped to every worker once (the flow scatters them with `broadcast=True`: every worker then
  holds them, so the scheduler places candidates by load, not by where the data sits). XGBoost
  matrices do not pickle; each worker process quantises a fold once and keeps the matrices in a
  small cache keyed by the encoding (`FoldArrays.key`), as the sequential path keeps its own.
* `run_search` keeps every worker thread busy with one candidate (one XGBoost thread each),
  starting the next one as soon as one finishes, under the same budget rule as the sequential
  search: stop starting candidates when one more fold would not fit before the deadline, which
  holds back time for the final refit. It only needs `submit` and `wait_first` callables, so
  Prefect futures, Dask futures or `concurrent.futures` all drive it.
* With racing off (`margin=math.inf`) and the same XGBoost thread count, a candidate's fold
  AUCs equal the sequential path's exactly: same arrays, same matrices, same seed.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from readmit.model.train import (
    REFIT_SHRINKAGE,
    FoldArrays,
    FoldData,
    Prepared,
    Trial,
    fold_matrices,
    prepare_folds,
    race_candidate,
)

RACE_MARGIN = 0.003
"""Same racing margin as `train.search_xgboost`."""
_MATRIX_CACHE_SIZE = 8
_matrix_cache: OrderedDict[tuple[str, int], FoldData] = OrderedDict()
_matrix_lock = threading.Lock()


@dataclass
class EncodedFolds:
    """Per-fold arrays to ship, and the baseline's CV (computed on them where they were built)."""

    folds: list[FoldArrays]
    baseline_fold_auc: list[float]
    baseline_oof: np.ndarray


@dataclass
class CandidateResult:
    """What a worker sends back: the trial and, when every fold ran, its OOF predictions."""

    trial: Trial
    oof: np.ndarray | None


class _Future(Protocol):
    def result(self) -> Any: ...


F = TypeVar("F", bound=_Future)
Submit = Callable[[int, dict[str, Any], list[float] | None, float], F]
"""(candidate index, params, best complete trial's fold AUCs or None, seconds left) -> future."""


def encode_folds(prepared: Prepared) -> EncodedFolds:
    """Encode every fold once (per-fold encoder, as the sequential path) and run the baseline."""
    p = prepared
    folds, oof, fold_auc = prepare_folds(
        p.features, p.y, p.groups, p.folds, p.encoder, seed=p.seed, keep=lambda fold: fold
    )
    return EncodedFolds(folds, fold_auc, oof)


def local_cluster_kwargs(cores: int | None = None) -> dict[str, Any]:
    """`distributed.LocalCluster` arguments for this machine: one single-threaded worker process
    per core, so candidates (one XGBoost thread each) never oversubscribe the cores; loopback
    only, dashboard on a free port.
    """
    n = max(1, cores or os.cpu_count() or 1)
    return {
        "n_workers": n,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
    }


def cluster_threads(scheduler_info: dict[str, Any]) -> int:
    """Task slots of a cluster (its workers' threads), from `Client.scheduler_info()`."""
    return max(1, sum(int(w.get("nthreads", 1)) for w in scheduler_info["workers"].values()))


def worker_identity() -> tuple[str | None, int]:
    """(Dask worker address or None outside a worker, process id): where a trial ran."""
    try:
        from distributed import get_worker

        return get_worker().address, os.getpid()
    except (ImportError, ValueError):
        return None, os.getpid()


def cached_matrices(folds: list[FoldArrays], n_jobs: int) -> list[FoldData]:
    """This process's XGBoost matrices of `folds`, quantised on first use only.

    Every candidate on a worker reuses them (quantising a full-data fold takes ~1.5 s of a
    ~25 s candidate); least recently used encodings are dropped past a few folds.
    """
    out = []
    with _matrix_lock:
        for fold in folds:
            key = (fold.key, n_jobs)
            if key not in _matrix_cache:
                _matrix_cache[key] = fold_matrices(fold, n_jobs)
                while len(_matrix_cache) > _MATRIX_CACHE_SIZE:
                    _matrix_cache.popitem(last=False)
            _matrix_cache.move_to_end(key)
            out.append(_matrix_cache[key])
    return out


def evaluate_candidate(
    params: dict[str, Any],
    folds: list[FoldArrays],
    race_against: list[float] | None,
    time_left_s: float,
    *,
    seed: int,
    n_jobs: int,
    margin: float = RACE_MARGIN,
) -> CandidateResult:
    """One candidate's grouped CV, fold by fold, as `train.race_candidate` does it in-process.

    Args:
        params: XGBoost parameters of the candidate.
        folds: The per-fold arrays.
        race_against: Per-fold ROC AUCs of the best complete trial so far; None: no racing and
            no deadline (the candidate runs every fold).
        time_left_s: Seconds until the search's deadline, counted from the start of this call.
        seed: XGBoost seed.
        n_jobs: XGBoost threads (one per Dask thread: the cluster's slots are its threads).
        margin: How far behind the best a candidate may be after a fold; `math.inf`: no racing.
    """
    matrices = cached_matrices(folds, n_jobs)
    best = None if race_against is None else Trial(params={}, fold_auc=list(race_against))
    deadline = time.perf_counter() + time_left_s
    trial, oof = race_candidate(
        params, matrices, best, deadline, seed=seed, n_jobs=n_jobs, margin=margin
    )
    trial.worker, trial.pid = worker_identity()
    return CandidateResult(trial, oof)


def may_start(
    best: Trial | None, finished: list[Trial], elapsed_s: float, budget_s: float, refit_share: float
) -> tuple[bool, float]:
    """Whether a new candidate may start, and the seconds left before the search deadline.

    Until a candidate has completed, candidates start unconditionally (the first wave always
    completes, whatever the budget). Then one more fold must fit before the deadline, which
    holds back `refit_share` x the best trial's time for the final refit.
    """
    if best is None:
        return True, math.inf
    left = budget_s - refit_share * best.seconds - elapsed_s
    folds_run = sum(len(t.fold_auc) for t in finished)
    per_fold = sum(t.seconds for t in finished) / max(folds_run, 1)
    return per_fold <= left, left


def run_search(
    candidates: list[dict[str, Any]],
    submit: Submit[F],
    wait_first: Callable[[list[F]], F],
    *,
    slots: int,
    budget_s: float,
    refit_share: float = 0.6 * REFIT_SHRINKAGE,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[Trial, np.ndarray, list[Trial]]:
    """Keep `slots` candidates running until the candidates or the budget run out.

    Returns (best complete trial by mean CV ROC AUC, its OOF predictions, all trials in
    candidate order), like `train.search_xgboost`.

    Args:
        candidates: Parameter sets, in order (`train.candidate_list`).
        submit: Starts one candidate somewhere and returns its future (`.result()` gives a
            `CandidateResult`).
        wait_first: Blocks until one of the given futures is done and returns it.
        slots: Candidates run at once (the cluster's threads).
        budget_s: Wall-time budget of the search and the final refit.
        refit_share: Share of the best trial's time held back for the refit.
        log: Progress messages.
    """
    start = time.perf_counter()
    queue = list(enumerate(candidates))
    running: dict[F, int] = {}
    trials: dict[int, Trial] = {}
    best: tuple[int, Trial, np.ndarray] | None = None
    while queue or running:
        while queue and len(running) < slots:
            elapsed = time.perf_counter() - start
            leader = best[1] if best else None
            ok, left = may_start(leader, list(trials.values()), elapsed, budget_s, refit_share)
            if not ok:
                log(f"budget reached after {elapsed:.0f} s: {len(queue)} candidates not started")
                queue.clear()
                break
            index, params = queue.pop(0)
            running[submit(index, params, leader.fold_auc if leader else None, left)] = index
        if not running:
            break
        future = wait_first(list(running))
        index = running.pop(future)
        result: CandidateResult = future.result()
        trials[index] = trial = result.trial
        if result.oof is not None and (best is None or trial.mean_auc > best[1].mean_auc):
            best = (index, trial, result.oof)
        log(progress_line(index, len(candidates), trial, best))
    if best is None:
        raise RuntimeError("no candidate completed")
    return best[1], best[2], [trials[i] for i in sorted(trials)]


def progress_line(
    index: int, total: int, trial: Trial, best: tuple[int, Trial, np.ndarray] | None
) -> str:
    """One log line per finished candidate: where it ran, how it did, the best so far."""
    status = "complete" if trial.complete else f"stopped after {len(trial.fold_auc)} fold(s)"
    where = f"{trial.worker or 'in-process'} (pid {trial.pid})"
    best_text = f"{best[1].mean_auc:.4f} (candidate {best[0] + 1})" if best else "none yet"
    return (
        f"candidate {index + 1}/{total} on {where}: mean ROC AUC {trial.mean_auc:.4f}, "
        f"{status}, {trial.seconds:.1f} s; best so far {best_text}"
    )
