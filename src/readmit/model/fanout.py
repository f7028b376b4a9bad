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
* The search loop is the one of `readmit.model.train` (`run_search`): every worker thread busy
  with one candidate (one XGBoost thread each), the next one started as soon as one finishes,
  under the one budget rule. In-process is the same loop with one slot.
* With racing off (`margin=math.inf`) and the same XGBoost thread count, a candidate's fold
  AUCs equal the sequential path's exactly: same arrays, same matrices, same seed.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from readmit.model.train import (
    RACE_MARGIN,
    CandidateResult,
    FoldArrays,
    FoldData,
    Prepared,
    fold_matrices,
    prepare_folds,
    run_search,
    score_candidate,
)

__all__ = ["RACE_MARGIN", "CandidateResult", "run_search"]

_MATRIX_CACHE_SIZE = 8
_matrix_cache: OrderedDict[tuple[str, int], FoldData] = OrderedDict()
_matrix_lock = threading.Lock()


@dataclass
class EncodedFolds:
    """Per-fold arrays to ship, and the baseline's CV (computed on them where they were built)."""

    folds: list[FoldArrays]
    baseline_fold_auc: list[float]
    baseline_oof: np.ndarray


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


def cluster_line(info: dict[str, Any], n_candidates: int, slots: int, budget_s: float) -> str:
    """The log line that opens a search on a cluster."""
    return (
        f"search: up to {n_candidates} candidates on Dask scheduler {info.get('address')} "
        f"({len(info['workers'])} workers), {slots} at a time, budget {budget_s:.0f} s"
    )


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
    """`train.score_candidate` on a worker: the fold arrays quantised once per process
    (`cached_matrices`), the trial stamped with the worker that ran it."""
    matrices = cached_matrices(folds, n_jobs)
    result = score_candidate(
        params, matrices, race_against, time_left_s, seed=seed, n_jobs=n_jobs, margin=margin
    )
    result.trial.worker, result.trial.pid = worker_identity()
    return result
