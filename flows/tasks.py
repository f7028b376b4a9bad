"""Tasks shared by the flows: read and validate a batch, fit (the search in-process or on Dask),
assess on the holdout as served, write the monitoring reference.

Each task calls one `readmit` function and owns the I/O around it. The XGBoost search runs
in-process by default, or fanned out over a Dask cluster (`READMIT_DASK_ADDRESS` or a flow's
`dask_address` parameter) through `prefect-dask`, one task run per candidate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import numpy as np
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.exceptions import MissingContextError
from prefect.futures import PrefectFuture, as_completed
from prefect.logging import get_logger
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from readmit import data, monitoring
from readmit.data import validation
from readmit.model import evaluate, fanout, lineage, train
from readmit.schema import LabelDefinition
from readmit.settings import get_settings


@task(cache_policy=NO_CACHE)
def read_batch(uri: str) -> data.RawFile:
    """Read raw encounters; the shipped data set is checked against its sha256."""
    settings = get_settings()
    expected = settings.data_sha256 if uri == settings.data_uri else None
    batch = data.read_raw(uri, expected)
    get_run_logger().info("read %s (%.1f MB, sha256 %s)", uri, len(batch.raw) / 1e6, batch.sha256)
    return batch


@task(cache_policy=NO_CACHE)
def validate_batch(batch: data.RawFile, batch_name: str) -> tuple[Any, dict[str, Any]]:
    """Great Expectations gate: a failing batch is quarantined with its report; the flow stops."""
    frame, summary = validation.validate_and_record(
        batch.content,
        artifacts_uri=get_settings().artifacts_uri,
        batch_name=batch_name,
        raw=batch.raw,
    )
    get_run_logger().info(
        "validation passed: %d expectations on %d rows", summary["n_expectations"], len(frame)
    )
    return frame, summary


def _label(label: str) -> LabelDefinition:
    """Callers (the retraining flow) pass the label as text; the library takes the literal."""
    if label not in ("<30", "any"):
        raise ValueError(f"unknown label definition {label!r}: '<30' or 'any'")
    return cast(LabelDefinition, label)


@task(name="fit", cache_policy=NO_CACHE)
def fit_in_process(
    train_frame: Any, label: str, seed: int, search_budget_s: float
) -> train.TrainingResult:
    """Baseline + tuned XGBoost on patient-grouped CV, the search sequential in this process."""
    return train.train_models(
        train_frame,
        label=_label(label),
        seed=seed,
        search_budget_s=search_budget_s,
    )


@task(cache_policy=NO_CACHE)
def prepare_features(train_frame: Any, label: str, seed: int) -> train.Prepared:
    """Labels, label-free features and patient-grouped folds (in this process)."""
    return train.prepare_training(train_frame, label=_label(label), seed=seed)


@task(cache_policy=NO_CACHE)
def encode_folds(prepared: train.Prepared) -> fanout.EncodedFolds:
    """Per-fold design matrices (built once, shipped once) and the baseline's CV."""
    return fanout.encode_folds(prepared)


@task(cache_policy=NO_CACHE, task_run_name="candidate-{number}")
def evaluate_candidate(
    number: int,
    params: dict[str, Any],
    folds: list[train.FoldArrays],
    race_against: list[float] | None,
    time_left_s: float,
    seed: int,
    margin: float,
) -> fanout.CandidateResult:
    """One candidate's grouped CV on a Dask worker, one XGBoost thread per Dask thread."""
    return fanout.evaluate_candidate(
        params, folds, race_against, time_left_s, seed=seed, n_jobs=1, margin=margin
    )


@task(cache_policy=NO_CACHE)
def finish(
    prepared: train.Prepared,
    encoded: fanout.EncodedFolds,
    search: tuple[train.Trial, np.ndarray, list[train.Trial]],
    timings: dict[str, float],
) -> train.TrainingResult:
    """Final refit on all rows and the baseline, as after the in-process search."""
    baseline_cv = (encoded.baseline_fold_auc, encoded.baseline_oof)
    return train.finish_training(
        prepared, search, baseline_cv, timings, n_jobs=train.DEFAULT_N_JOBS
    )


def dask_task_runner(address: str) -> DaskTaskRunner:
    """A LocalCluster for the run ("local", torn down after it) or an existing scheduler."""
    if address == "local":
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster", cluster_kwargs=fanout.local_cluster_kwargs()
        )
    return DaskTaskRunner(address=address)


@contextmanager
def _workers_report_here() -> Iterator[None]:
    """Point Dask workers at this process's Prefect API (task runs travel with the settings).

    With the temporary local API (PREFECT_API_URL unset) every worker process would otherwise
    start a temporary server of its own (~10 s each) and record its task runs there.
    """
    if PREFECT_API_URL.value():
        yield
        return
    with get_client(sync_client=True) as client:
        url = str(client.api_url)
    with temporary_settings({PREFECT_API_URL: url}):
        yield


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a flow run (tests, benchmarks)
        return get_logger("readmit.model.fanout")


def search_on_dask(
    encoded: fanout.EncodedFolds,
    address: str,
    candidates: list[dict[str, Any]],
    seed: int,
    budget_s: float,
    race: bool = True,
) -> tuple[train.Trial, np.ndarray, list[train.Trial]]:
    """The XGBoost search fanned out over a Dask cluster, one Prefect task run per candidate.

    Runs its own `DaskTaskRunner` inside the calling flow rather than as a subflow: Prefect
    pickles the flow run's parameters into every task it sends to Dask, so the fold arrays must
    not be a flow parameter. They are scattered to every worker once instead.

    Args:
        encoded: Per-fold arrays (`fanout.encode_folds`).
        address: "local" or a scheduler address ("tcp://host:8786").
        candidates: XGBoost parameter sets, in order (`train.candidate_list`).
        seed: XGBoost seed.
        budget_s: Wall-time budget of the search and the final refit.
        race: Drop candidates trailing the best after a fold (off: every candidate runs all
            folds, as a fixed-list comparison needs).
    """
    logger = _logger()
    margin = fanout.RACE_MARGIN if race else math.inf
    with _workers_report_here(), dask_task_runner(address) as runner:
        info = runner.client.scheduler_info()
        slots = fanout.cluster_threads(info)
        logger.info(fanout.cluster_line(info, len(candidates), slots, budget_s))
        # Every worker holds its own copy: candidates go wherever a thread is free.
        shipped = runner.client.scatter(encoded.folds, broadcast=True)

        def submit(
            index: int, params: dict[str, Any], race_against: list[float] | None, left: float
        ) -> PrefectFuture[fanout.CandidateResult]:
            parameters = dict(
                number=index + 1,
                params=params,
                folds=shipped,
                race_against=race_against,
                time_left_s=left,
                seed=seed,
                margin=margin,
            )
            return runner.submit(evaluate_candidate, parameters)

        best, oof, trials = fanout.run_search(
            candidates, submit, _first_done, slots=slots, budget_s=budget_s, log=logger.info
        )
    logger.info(train.search_done_line(best, trials))
    return best, oof, trials


def _first_done(futures: list[PrefectFuture[Any]]) -> PrefectFuture[Any]:
    return next(as_completed(futures))


def fit(
    train_frame: Any,
    label: str,
    seed: int,
    search_budget_s: float,
    dask_address: str | None = None,
) -> train.TrainingResult:
    """Baseline + tuned XGBoost on patient-grouped CV; the search in-process or on Dask.

    Args:
        train_frame: Training encounters.
        label: "<30" or "any".
        seed: Seed of folds, search and models.
        search_budget_s: Wall-time budget of the search and the final refit.
        dask_address: "local", "tcp://host:8786" or "none" (in-process); default
            `READMIT_DASK_ADDRESS`, unset meaning in-process.
    """
    address = dask_address or get_settings().dask_address
    if not address or address == "none":
        return fit_in_process(train_frame, label, seed, search_budget_s)
    timings: dict[str, float] = {}
    with lineage.timer(timings, "train_features_and_baseline_cv"):
        prepared = prepare_features(train_frame, label, seed)
        encoded = encode_folds(prepared)
    with lineage.timer(timings, "train_search"):
        candidates = train.candidate_list(seed, train.DEFAULT_N_ITER)
        search = search_on_dask(encoded, address, candidates, seed, search_budget_s)
    return finish(prepared, encoded, search, timings)


@task(cache_policy=NO_CACHE)
def assess(result: train.TrainingResult, holdout: Any, label: str) -> dict[str, Any]:
    """Holdout evaluation of the tuned model and of the baseline, side by side."""
    model_eval = evaluate.evaluate_model(result.model, holdout, label=_label(label))
    baseline_eval = evaluate.evaluate_model(result.baseline, holdout, label=_label(label))
    return {"model": model_eval, "baseline": baseline_eval}


@task(cache_policy=NO_CACHE)
def write_reference(
    train_feed: Any, holdout_feed: Any, model: Any, label: str, version: str
) -> tuple[str, float]:
    """Monitoring reference of the model, as the monitor will see data: whylogs profile of the
    training patients' feed, drift thresholds calibrated on no-drift samples of it, served-path
    prediction profile of the holdout's feed, performance baseline of the holdout's cohort."""
    uris = monitoring.ReferenceUris.for_model(get_settings().artifacts_uri, version)
    rows_per_s = monitoring.build_reference(uris, train_feed, holdout_feed, model, _label(label))
    get_run_logger().info("reference profile: %s (%.0f rows/s)", uris.profile, rows_per_s)
    return uris.profile, rows_per_s
