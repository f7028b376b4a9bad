"""Monitoring: a model's reference set, per-batch drift reports, and the drift-event cooldown.

A model's reference set is written by the training flow next to its reports and read by every
monitoring run:
    models/<version>/reference_profile.bin      whylogs profile of the training data
    models/<version>/drift_thresholds.json      per-feature thresholds calibrated on no-drift data
    models/<version>/prediction_profile.bin     profile of the holdout's predicted probabilities
    models/<version>/prediction_thresholds.json
    models/<version>/performance_baseline.json  holdout ROC AUC and calibration
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from readmit import drift, profiling, storage


@dataclass(frozen=True)
class ReferenceUris:
    """Where a model's monitoring reference lives."""

    profile: str
    thresholds: str
    prediction_profile: str
    prediction_thresholds: str
    performance: str

    @classmethod
    def for_model(cls, artifacts_uri: str, version: str) -> ReferenceUris:
        """Reference set of a model version (see module docstring)."""
        base = f"{artifacts_uri.rstrip('/')}/models/{version}"
        return cls(
            f"{base}/reference_profile.bin",
            f"{base}/drift_thresholds.json",
            f"{base}/prediction_profile.bin",
            f"{base}/prediction_thresholds.json",
            f"{base}/performance_baseline.json",
        )


@dataclass(frozen=True)
class Reference:
    """A loaded reference set."""

    profile: Any
    thresholds: drift.Thresholds
    prediction_profile: Any
    prediction_thresholds: drift.Thresholds
    performance: drift.PerformanceBaseline


def write_reference(
    uris: ReferenceUris,
    train_frame: pd.DataFrame,
    holdout_y: np.ndarray,
    holdout_p: np.ndarray,
    *,
    seed: int = 0,
) -> float:
    """Profile the training data, calibrate thresholds on no-drift data, store everything.

    Returns the profiling rate (rows/s) of the training data. `train_frame` keeps `patient_nbr`
    for patient-grouped calibration; profiles never contain it.
    """
    start = datetime.now(UTC)
    view = profiling.profile_frame(train_frame)
    rows_per_s = len(train_frame) / max((datetime.now(UTC) - start).total_seconds(), 1e-9)
    profiling.write_profile(view, uris.profile)
    drift.write_thresholds(drift.calibrate_from_frame(train_frame, seed=seed), uris.thresholds)
    prediction_view, prediction_thresholds = drift.calibrate_predictions(holdout_p, seed=seed)
    profiling.write_profile(prediction_view, uris.prediction_profile)
    drift.write_thresholds(prediction_thresholds, uris.prediction_thresholds)
    storage.write_json(uris.performance, drift.performance_baseline(holdout_y, holdout_p).to_dict())
    return rows_per_s


def load_reference(uris: ReferenceUris) -> Reference:
    """Read a reference set written by `write_reference`."""
    return Reference(
        profile=profiling.read_profile(uris.profile),
        thresholds=drift.read_thresholds(uris.thresholds),
        prediction_profile=profiling.read_profile(uris.prediction_profile),
        prediction_thresholds=drift.read_thresholds(uris.prediction_thresholds),
        performance=drift.PerformanceBaseline.from_dict(storage.read_json(uris.performance)),
    )


def monitor_batch(
    reference: Reference,
    batch_id: str,
    batch: pd.DataFrame,
    probabilities: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> drift.DriftReport:
    """Drift of a batch's features, of its predictions, and (labels known) its performance."""
    view = profiling.profile_frame(batch)
    features = drift.score_features(reference.profile, view, reference.thresholds)
    prediction = None
    if probabilities is not None and len(probabilities):
        prediction = drift.score_predictions(
            reference.prediction_profile,
            profiling.profile_predictions(probabilities),
            reference.prediction_thresholds,
        )
    performance = None
    if labels is not None and probabilities is not None and len(labels):
        performance = drift.assess_performance(labels, probabilities, reference.performance)
    return drift.drift_report(
        batch_id,
        features,
        prediction=prediction,
        performance=performance,
        thresholds=reference.thresholds,
    )


def cooldown_allows(last_event_at: str | None, now: datetime, cooldown_s: float) -> bool:
    """True if no drift event was emitted within the cooldown: one episode, one retraining."""
    if last_event_at is None:
        return True
    elapsed = (now - datetime.fromisoformat(last_event_at)).total_seconds()
    return elapsed >= cooldown_s


def read_state(url: str) -> dict[str, Any]:
    """Monitoring state (last event time, batches seen); empty before the first run."""
    return storage.read_json(url) if storage.exists(url) else {}


def severity_gauge(severity: drift.Severity) -> int:
    """Severity as a number for Prometheus: none 0, minor 1, moderate 2, major 3."""
    return severity.rank


def push_metrics(gateway_url: str | None, reports: list[drift.DriftReport], model_tag: str) -> None:
    """Push monitoring results to a Prometheus Pushgateway (no-op when none is configured).

    Gauges: batch severity (0-3), per-feature drift ratio, realised ROC AUC, and the time of this
    successful run (alerts fire when it goes stale). Labels carry feature names, never ids.
    """
    if not gateway_url:
        return
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    severity = Gauge(
        "readmit_drift_severity",
        "Worst drift severity of the last run (0-3)",
        ["model"],
        registry=registry,
    )
    ratio = Gauge(
        "readmit_drift_feature_ratio",
        "Drift score / calibrated threshold",
        ["model", "feature"],
        registry=registry,
    )
    auc = Gauge(
        "readmit_realised_roc_auc",
        "ROC AUC on the latest labelled batch",
        ["model"],
        registry=registry,
    )
    last = Gauge(
        "readmit_monitoring_last_success_timestamp_seconds",
        "Unix time of the last successful monitoring run",
        registry=registry,
    )
    worst = max((r.severity.rank for r in reports), default=0)
    severity.labels(model_tag).set(worst)
    for r in reports:
        for f in r.features:
            ratio.labels(model_tag, f.feature).set(f.ratio)
        if r.performance is not None and r.performance.roc_auc is not None:
            auc.labels(model_tag).set(r.performance.roc_auc)
    last.set_to_current_time()
    push_to_gateway(gateway_url, job="readmit-monitoring", registry=registry, timeout=10)
