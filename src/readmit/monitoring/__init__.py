"""Monitoring: a model's reference set, per-batch drift reports, and the drift-event cooldown.

A model's reference set is written by the training flow next to its reports and read by every
monitoring run:
    models/<version>/reference_profile.bin      whylogs profile of the training patients' feed
    models/<version>/drift_thresholds.json      per-feature thresholds calibrated on no-drift data
    models/<version>/prediction_profile.bin     served-path probabilities of the holdout's feed
    models/<version>/prediction_thresholds.json
    models/<version>/performance_baseline.json  holdout ROC AUC and calibration
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from readmit import storage
from readmit.data import in_cohort
from readmit.features import make_label
from readmit.layout import StoreLayout
from readmit.monitoring import drift, profiling
from readmit.schema import OUTCOME_COLUMNS
from readmit.serving.scoring import served_probabilities


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
        base = StoreLayout(artifacts_uri).model_dir(version)
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
    reference_feed: pd.DataFrame,
    feed_p: np.ndarray,
    holdout_y: np.ndarray,
    holdout_p: np.ndarray,
    *,
    seed: int = 0,
) -> float:
    """Profile the feed the model came from, calibrate thresholds on no-drift data, store all.

    The reference is what the monitor will see: `reference_feed` is raw feed rows of the
    training patients, every discharge disposition (the model's cohort is a monitored share of
    it, through `discharge_disposition_id`), and `feed_p` the served-path probabilities of the
    holdout patients' feed rows. `holdout_y`/`holdout_p` are the cohort holdout's outcomes and
    served probabilities: the performance baseline.

    Returns the profiling rate (rows/s). `reference_feed` keeps `patient_nbr` for
    patient-grouped calibration; profiles never contain it.
    """
    start = datetime.now(UTC)
    view = profiling.profile_frame(reference_feed)
    rows_per_s = len(reference_feed) / max((datetime.now(UTC) - start).total_seconds(), 1e-9)
    profiling.write_profile(view, uris.profile)
    thresholds = drift.calibrate_from_frame(reference_feed, seed=seed)
    drift.write_thresholds(thresholds, uris.thresholds)
    prediction_view, prediction_thresholds = drift.calibrate_predictions(feed_p, seed=seed)
    profiling.write_profile(prediction_view, uris.prediction_profile)
    drift.write_thresholds(prediction_thresholds, uris.prediction_thresholds)
    storage.write_json(uris.performance, drift.performance_baseline(holdout_y, holdout_p).to_dict())
    return rows_per_s


def build_reference(
    uris: ReferenceUris,
    train_feed: pd.DataFrame,
    holdout_feed: pd.DataFrame,
    model: Any,
    label_definition: str,
) -> float:
    """A model's monitoring reference from its split feed (`data.FeedSplit`), as the monitor
    will see data: the training patients' raw feed rows, the served-path probabilities of the
    holdout patients' feed rows (unknown patients, every disposition, no outcome), and the
    cohort holdout's performance. Returns the profiling rate (rows/s)."""
    feed_p, labels, cohort = served_batch(model, holdout_feed, label_definition)
    assert labels is not None
    return write_reference(uris, train_feed, feed_p, labels, feed_p[cohort])


def load_reference(uris: ReferenceUris) -> Reference:
    """Read a reference set written by `write_reference`."""
    return Reference(
        profile=profiling.read_profile(uris.profile),
        thresholds=drift.read_thresholds(uris.thresholds),
        prediction_profile=profiling.read_profile(uris.prediction_profile),
        prediction_thresholds=drift.read_thresholds(uris.prediction_thresholds),
        performance=drift.PerformanceBaseline.from_dict(storage.read_json(uris.performance)),
    )


def served_batch(
    model: Any, batch: pd.DataFrame, label_definition: str | None = None
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """A feed batch as the service sees it: (probabilities of every row, served path),
    (labels of the cohort rows, when `label_definition` is given and outcomes arrived), and
    the cohort mask. Outcomes never reach the scorer; performance is judged on the cohort."""
    unlabelled = batch.drop(columns=list(OUTCOME_COLUMNS), errors="ignore")
    probabilities = served_probabilities(model, unlabelled)
    cohort = in_cohort(batch)
    labels = None
    if label_definition is not None:
        labels = make_label(batch.loc[cohort], label_definition)  # type: ignore[arg-type]
    return probabilities, labels, cohort


def monitor_batch(
    reference: Reference,
    batch_id: str,
    batch: pd.DataFrame,
    probabilities: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    cohort: np.ndarray | None = None,
) -> drift.DriftReport:
    """Drift of a feed batch's features and predictions (every row, as the reference), and,
    labels known, the performance on its cohort rows (`cohort` mask; default all rows)."""
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
        scored = probabilities if cohort is None else probabilities[cohort]
        performance = drift.assess_performance(labels, scored, reference.performance)
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


def push_metrics(
    gateway_url: str | None,
    reports: list[drift.DriftReport],
    model_tag: str,
    served: Sequence[Any] = (),
) -> None:
    """Push monitoring results to a Prometheus Pushgateway (no-op when none is configured).

    Gauges: batch severity (0-3), per-feature drift ratio, realised ROC AUC, and the time of this
    successful run (alerts fire when it goes stale); for served traffic
    (`windows.WindowAssessment`s of this run, oldest first) the newest window's estimated ROC AUC
    and band, the newest realised ROC AUC and that window's label coverage, and the skew check.
    Labels carry model tags and feature names, never ids.
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
    served_gauges(registry, model_tag, served)
    last.set_to_current_time()
    push_to_gateway(gateway_url, job="readmit-monitoring", registry=registry, timeout=10)


def served_gauges(registry: Any, model_tag: str, assessed: Sequence[Any]) -> None:
    """Served-traffic gauges (see `push_metrics`) from window assessments, oldest first."""
    from prometheus_client import Gauge

    def gauge(name: str, doc: str) -> Any:
        return Gauge(name, doc, ["model"], registry=registry).labels(model_tag)

    if not assessed:
        return
    estimated = [a for a in assessed if a.estimate and a.estimate.estimated_auc is not None]
    if estimated:
        est = estimated[-1].estimate
        gauge("readmit_served_estimated_roc_auc", "CBPE ROC AUC of the newest served window").set(
            est.estimated_auc
        )
        if est.low is not None:
            gauge("readmit_served_estimated_roc_auc_low", "Low end of its 90% band").set(est.low)
    realised = [a for a in assessed if a.realised_auc is not None]
    if realised:
        gauge("readmit_served_realised_roc_auc", "Realised ROC AUC, newest labelled window").set(
            realised[-1].realised_auc
        )
        gauge("readmit_served_label_coverage", "Outcome coverage of that window").set(
            realised[-1].label_coverage
        )
    checked = [a.skew for a in assessed if a.skew.checked]
    if checked:
        gauge("readmit_served_skew_mismatched", "Re-scored rows that differ from the log").set(
            sum(s.mismatched for s in checked)
        )
        gauge("readmit_served_skew_max_abs_diff", "Largest logged vs re-scored difference").set(
            max(s.max_abs_diff or 0.0 for s in checked)
        )
    gauge("readmit_served_rows", "Served rows in the windows assessed by this run").set(
        sum(a.n_served for a in assessed)
    )
