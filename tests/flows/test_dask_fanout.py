"""The XGBoost search fanned out on real Dask clusters (worker processes), under Prefect.

No mocks: real rows, real `distributed.LocalCluster`s of two single-threaded worker processes,
real Prefect task runs through `prefect-dask`.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest

from flows.tasks import search_on_dask
from flows.training import training_flow
from readmit import data
from readmit.model import fanout, registry, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """An existing cluster, reached by its scheduler address (the production mode)."""
    from distributed import Client, LocalCluster

    kwargs = {**fanout.local_cluster_kwargs(2), "n_workers": 2, "threads_per_worker": 1}
    with LocalCluster(**kwargs) as local, Client(local) as client:
        yield local.scheduler_address, client.run(os.getpid)


def test_training_flow_searches_on_a_local_dask_cluster(harness, fresh_settings, small_csv):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = training_flow(data_uri=small_csv, search_budget_s=6, dask_address="local")
    # The fold arrays are scattered once, not pickled into every task (Dask warns past 10 MB).
    assert not [w for w in caught if "large graph" in str(w.message)]

    trials = out["search_trials"]
    assert len(trials) >= 2
    # Every candidate ran in a Dask worker process, not in this one, and both workers took some.
    assert all(t["worker"].startswith("tcp://127.0.0.1:") for t in trials)
    assert all(t["pid"] != os.getpid() for t in trials)
    assert len({t["pid"] for t in trials}) == 2
    # The model is the complete trial with the best mean CV ROC AUC, refitted on all rows (the
    # refit sets its own rounds and may slow the learning rate).
    best = max((t for t in trials if t["complete"]), key=lambda t: t["mean_auc"])
    meta = registry.load_model(out["tag"]).metadata
    assert meta["cv"]["xgboost"]["fold_roc_auc"] == best["fold_auc"]
    refit_own = {"n_estimators", "learning_rate"}
    assert {k: v for k, v in meta["params"].items() if k not in refit_own} == {
        k: v for k, v in best["params"].items() if k not in refit_own
    }
    assert meta["cv"]["trials"] == len(trials)
    assert {"train_search", "train_final_fit"} <= set(meta["timings_s"])
    frame = data.read_encounters(small_csv).frame
    probabilities = registry.load_model(out["tag"]).model.predict_proba(frame.head(50))[:, 1]
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    assert 0.5 < out["metrics"]["roc_auc"] <= 1.0


def test_fanout_cv_equals_the_sequential_search(harness, cluster, sample_frame):
    address, worker_pids = cluster
    cohort = data.exclude_died_or_hospice(sample_frame).reset_index(drop=True)
    prepared = train.prepare_training(cohort, seed=7, pseudonym_key=b"fanout-test")
    encoded = fanout.encode_folds(prepared)
    candidates = train.candidate_list(seed=7, n_iter=4)

    on_dask = search_on_dask(encoded, address, candidates, seed=7, budget_s=1e6, race=False)
    in_process = train.search_xgboost(
        [train.fold_matrices(f, n_jobs=1) for f in encoded.folds],
        seed=7,
        budget_s=1e6,
        n_iter=len(candidates),
        n_jobs=1,
        margin=math.inf,
        candidates=candidates,
    )

    dask_best, dask_oof, dask_trials = on_dask
    seq_best, seq_oof, seq_trials = in_process
    assert len(dask_trials) == len(seq_trials) == len(candidates)
    for d, s in zip(dask_trials, seq_trials, strict=True):
        assert d.params == s.params and d.complete and s.complete
        np.testing.assert_allclose(d.fold_auc, s.fold_auc, rtol=0, atol=1e-9)
        assert d.best_rounds == s.best_rounds
        assert (d.worker, d.pid) in worker_pids.items()
    assert {t.pid for t in dask_trials} == set(worker_pids.values())
    assert dask_best.params == seq_best.params
    assert dask_best.mean_auc == max(t.mean_auc for t in dask_trials)
    np.testing.assert_allclose(dask_oof, seq_oof, rtol=0, atol=1e-9)
