"""Benchmark: the XGBoost search in-process vs fanned out on a Dask LocalCluster, same candidates.

On the training part of the full data (the cohort and patient-disjoint split of the training
flow), the per-fold arrays are encoded once; then the SAME fixed list of candidates (full 3-fold
CV each, no racing, no budget) is evaluated twice, side by side:

* sequential, in this process: `train.search_xgboost` with 2 XGBoost threads (the default path);
* fanned out: `flows.training.search_on_dask` on a `distributed.LocalCluster` of single-threaded
  worker processes, one Prefect task run per candidate (temporary local API unless
  PREFECT_API_URL is set).

On 2 cores expect about 1x: XGBoost already uses both cores in-process. The point is that the
same code scales with workers on a real cluster. Prints per-candidate figures, wall times,
candidates per minute and the speedup; the last line is one JSON object.

    .venv/bin/python benchmarks/scaleout.py [--candidates 6] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before xgboost is imported
# Candidates run as Prefect task runs outside any flow run: their logs stay local.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2, help="single-threaded Dask workers")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from distributed import LocalCluster
    from prefect.client.orchestration import get_client

    from flows.tasks import search_on_dask
    from readmit import data
    from readmit.model import fanout, train
    from readmit.settings import get_settings

    settings = get_settings()
    seed, n = settings.seed, args.candidates
    start = time.perf_counter()
    frame = data.read_encounters(settings.data_uri, settings.data_sha256).frame
    cohort = data.exclude_died_or_hospice(frame)
    train_frame, _ = data.split_by_patient(cohort, 0.2, seed)
    prepared = train.prepare_training(train_frame, seed=seed)
    encoded = fanout.encode_folds(prepared)
    prep_s = time.perf_counter() - start
    candidates = train.candidate_list(seed, n)
    print(f"{len(train_frame):,} training rows; {len(encoded.folds)} folds encoded: {prep_s:.1f} s")

    start = time.perf_counter()
    folds = [train.fold_matrices(f, train.DEFAULT_N_JOBS) for f in encoded.folds]
    _, _, seq = train.search_xgboost(
        folds, seed=seed, budget_s=math.inf, n_iter=n, n_jobs=train.DEFAULT_N_JOBS,
        margin=math.inf, candidates=candidates,
    )  # fmt: skip
    sequential_s = time.perf_counter() - start
    del folds

    with get_client(sync_client=True) as client:  # start the temporary API before timing
        client.api_healthcheck()
    start = time.perf_counter()
    kwargs = {**fanout.local_cluster_kwargs(), "n_workers": args.workers}
    with LocalCluster(**kwargs) as cluster:
        cluster_start_s = time.perf_counter() - start
        start = time.perf_counter()
        _, _, fan = search_on_dask(
            encoded, cluster.scheduler_address, candidates, seed, math.inf, race=False
        )
        dask_s = time.perf_counter() - start

    print(f"\n{'candidate':<10}{'seq AUC':>9}{'dask AUC':>10}{'seq s':>8}{'dask s':>8}  worker")
    for k, (s, d) in enumerate(zip(seq, fan, strict=True)):
        line = f"{k + 1:<10}{s.mean_auc:>9.4f}{d.mean_auc:>10.4f}{s.seconds:>8.1f}{d.seconds:>8.1f}"
        print(f"{line}  {d.worker} (pid {d.pid})")
    auc_gap = max(abs(s.mean_auc - d.mean_auc) for s, d in zip(seq, fan, strict=True))
    print(f"\n{'path':<42}{'wall s':>8}{'cand/min':>10}")
    rows = [
        (f"sequential ({train.DEFAULT_N_JOBS} XGBoost threads)", sequential_s),
        (f"dask LocalCluster ({args.workers} workers x 1 thread)", dask_s),
    ]
    for name, seconds in rows:
        print(f"{name:<42}{seconds:>8.1f}{60 * n / seconds:>10.2f}")
    speedup = sequential_s / dask_s
    print(f"speedup {speedup:.2f}x; cluster start-up {cluster_start_s:.1f} s (not in dask time)")
    print(f"largest mean-AUC gap between the paths: {auc_gap:.1e}")
    print(json.dumps({
        "candidates": n,
        "folds": len(encoded.folds),
        "dask_workers": args.workers,
        "sequential_s": round(sequential_s, 1),
        "dask_local_s": round(dask_s, 1),
        "cluster_start_s": round(cluster_start_s, 1),
        "speedup": round(speedup, 2),
        "max_mean_auc_gap": float(f"{auc_gap:.2e}"),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
