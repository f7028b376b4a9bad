"""Benchmark: drift detection on clean and drifted batches, and the cost of monitoring one batch.

Data: the shipped encounters (died/hospice excluded), time-ordered; the reference period is the
oldest `READMIT_REFERENCE_FRACTION` (0.6). Its patients are split three ways (disjoint), as the
training flow would use them:
- reference, 60%: the whylogs reference profile, a small logistic regression standing in for the
  production model, and the feature thresholds (`drift.calibrate_from_frame`: 20 clean batches of
  about 5,000 rows, patient-grouped K-fold, each batch against the merge of the other groups);
- holdout, 20%: the model's "training holdout" figures (ROC AUC, ECE, rates) and the prediction
  reference and thresholds (`drift.calibrate_predictions`);
- evaluation, 20%: 20 clean batches of 5,000 for the false-alarm count; scenarios are injected
  into them. The pool holds about 12,000 rows, so these batches overlap each other (each one is
  still a random sample, patient-disjoint from the reference).

Each batch is monitored on two paths, as in production:
- arrival: features (no label) + prediction drift;
- labels arrived: the label's drift + realised ROC AUC and calibration vs the holdout.
Label-rate shift and concept change are only visible on the second path: the label's PSI and
calibration-in-the-large catch the label rate; only the ROC AUC drop catches a concept change
(all marginals are unchanged by construction).

A batch "alerts" when severity is moderate or major or performance dropped. Printed: false alarms
on the 20 clean batches, detection per scenario x strength (sudden: first batch; gradual: batches
until detection over a 5-batch ramp plus 2 batches at full strength), the time per step for one
5,000-row batch, and, for information, alerts on the real later batches (genuine drift over
1999-2008). The last line is one JSON object.

    .venv/bin/python benchmarks/drift.py
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from readmit import data, drift, profiling
from readmit.report import render_drift_report_html
from readmit.schema import LABEL_COLUMN
from readmit.settings import get_settings

BATCH_SIZE = 5000
N_CLEAN = 20
RAMP = 5
CATEGORICAL = ["age", "admission_type_id", "admission_source_id", "discharge_disposition_id",
               "payer_code", "A1Cresult", "insulin", "change", "diabetesMed"]  # fmt: skip
NUMERIC = ["time_in_hospital", "num_lab_procedures", "num_procedures", "num_medications",
           "number_outpatient", "number_emergency", "number_inpatient",
           "number_diagnoses"]  # fmt: skip


def _design(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame[CATEGORICAL].astype(object).astype(str)
    return pd.concat([out, frame[NUMERIC].astype(float).fillna(0.0)], axis=1)


def fit_model(frame: pd.DataFrame) -> Any:
    """A small logistic regression standing in for the production model."""
    columns = ColumnTransformer(
        [("cat", OneHotEncoder(handle_unknown="ignore", min_frequency=20), CATEGORICAL),
         ("num", StandardScaler(), NUMERIC)]
    )  # fmt: skip
    model = make_pipeline(columns, LogisticRegression(max_iter=500))
    return model.fit(_design(frame), _label(frame))


def _label(frame: pd.DataFrame) -> np.ndarray:
    return frame[LABEL_COLUMN].eq(drift.POSITIVE_LABEL).fillna(False).to_numpy(dtype=int)


class Monitor:
    """Reference, thresholds and baseline: what the training flow would store."""

    def __init__(self, reference: pd.DataFrame, holdout: pd.DataFrame) -> None:
        self.model = fit_model(reference)
        self.reference = profiling.profile_frame(reference)
        self.thresholds = drift.calibrate_from_frame(
            reference, n_batches=N_CLEAN, batch_size=BATCH_SIZE, seed=1
        )
        holdout_p = self.predict(holdout)
        self.baseline = drift.performance_baseline(_label(holdout), holdout_p)
        self.pred_reference, self.pred_thresholds = drift.calibrate_predictions(
            holdout_p, n_batches=N_CLEAN, batch_size=BATCH_SIZE, seed=2
        )

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(_design(frame))[:, 1]

    def arrival(self, batch: pd.DataFrame, name: str, timings: dict | None = None) -> Any:
        """Features + prediction drift of a batch without labels (timed when asked)."""
        t = {} if timings is None else timings
        start = time.perf_counter()
        probabilities = self.predict(batch)  # the service's prediction logs, in production
        t["predict_s"] = time.perf_counter() - start
        start = time.perf_counter()
        view = profiling.profile_frame(batch.drop(columns=[LABEL_COLUMN]))
        t["profile_s"] = time.perf_counter() - start
        start = time.perf_counter()
        features = drift.score_features(self.reference, view, self.thresholds)
        t["feature_drift_s"] = time.perf_counter() - start
        start = time.perf_counter()
        pred_view = profiling.profile_predictions(probabilities)
        prediction = drift.score_predictions(self.pred_reference, pred_view, self.pred_thresholds)
        t["prediction_drift_s"] = time.perf_counter() - start
        start = time.perf_counter()
        report = drift.drift_report(
            name, features, prediction=prediction, thresholds=self.thresholds
        )
        html = render_drift_report_html(report, f"Drift report {name}")
        json.dumps(report.to_dict())
        t["report_s"] = time.perf_counter() - start
        t["html_bytes"] = len(html)
        return report

    def labelled(self, batch: pd.DataFrame, name: str) -> Any:
        """The label's drift and realised performance, once labels arrived."""
        label_view = profiling.profile_frame(batch[[LABEL_COLUMN]])
        label = drift.score_features(self.reference, label_view, self.thresholds)
        performance = drift.assess_performance(_label(batch), self.predict(batch), self.baseline)
        return drift.drift_report(name, label, performance=performance, thresholds=self.thresholds)

    def check(self, batch: pd.DataFrame, name: str) -> dict[str, Any]:
        arrival, labelled = self.arrival(batch, name), self.labelled(batch, name)
        return {
            "alert": arrival.alert or labelled.alert,
            "arrival": arrival.severity.value,
            "labelled": labelled.severity.value,
            "performance_drop": labelled.performance_drop,
            "responsible": (arrival.responsible + labelled.responsible)[:4],
            "reasons": labelled.performance.reasons if labelled.performance else [],
            "max_ratio": max([f.ratio for f in arrival.features] + [0.0]),
        }


def split_reference_period(frame: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, ...]:
    reference, rest = data.split_by_patient(frame, holdout_fraction=0.4, seed=seed)
    calibration, evaluation = data.split_by_patient(rest, holdout_fraction=0.5, seed=seed + 1)
    return reference, calibration, evaluation


def run_scenarios(monitor: Monitor, clean: list[pd.DataFrame]) -> list[dict[str, Any]]:
    rows = []
    for name in drift.SCENARIOS:
        for strength in drift.STRENGTHS:
            sudden = drift.inject(clean[0], name, strength, seed=100)
            first = monitor.check(sudden, f"{name}-{strength}")
            episode = drift.inject_sequence(
                clean[1 : RAMP + 3], name, strength, mode="gradual", ramp_batches=RAMP, seed=200
            )
            until = next(
                (i + 1 for i, b in enumerate(episode) if monitor.check(b, f"{name}-g{i}")["alert"]),
                None,
            )
            rows.append({"scenario": name, "strength": strength, "first_batch": first["alert"],
                         "gradual_batches_until_detection": until, **first})  # fmt: skip
    return rows


def time_monitoring(monitor: Monitor, batch: pd.DataFrame, repeats: int = 3) -> dict[str, float]:
    runs = []
    for i in range(repeats):
        timings: dict[str, float] = {}
        monitor.arrival(batch, f"timing-{i}", timings)
        runs.append(timings)
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    steps = ("profile_s", "feature_drift_s", "prediction_drift_s", "report_s")
    best["monitor_s"] = sum(best[k] for k in steps)
    return best


def main() -> None:
    settings = get_settings()
    start = time.perf_counter()
    frame = data.exclude_died_or_hospice(
        data.read_encounters(settings.data_uri, settings.data_sha256).frame
    )
    period, future = data.reference_and_batches(frame, settings.reference_fraction, BATCH_SIZE)
    reference, holdout, evaluation = split_reference_period(period, settings.seed)
    monitor = Monitor(reference, holdout)
    setup_s = time.perf_counter() - start
    print(f"reference {len(reference):,} rows, holdout {len(holdout):,}, "
          f"evaluation pool {len(evaluation):,}; holdout AUC {monitor.baseline.roc_auc:.3f}, "
          f"ECE {monitor.baseline.ece:.4f}; set-up {setup_s:.1f}s")  # fmt: skip

    clean = drift.sample_batches(evaluation, N_CLEAN, BATCH_SIZE, seed=3)
    clean_checks = [monitor.check(b, f"clean-{i}") for i, b in enumerate(clean)]
    false_alarms = sum(c["alert"] for c in clean_checks)
    minors = sum(c["arrival"] != "none" or c["labelled"] != "none" for c in clean_checks)
    print(f"\nclean batches: {N_CLEAN}, false alarms: {false_alarms}, any minor: {minors}, "
          f"max feature ratio {max(c['max_ratio'] for c in clean_checks):.2f}")  # fmt: skip

    rows = run_scenarios(monitor, clean)
    print(f"\n{'scenario':<16}{'strength':<10}{'1st batch':>10}{'gradual':>9}  "
          f"{'arrival':<9}{'labelled':<9}responsible / reasons")  # fmt: skip
    for r in rows:
        until = r["gradual_batches_until_detection"]
        print(f"{r['scenario']:<16}{r['strength']:<10}{'yes' if r['first_batch'] else 'NO':>10}"
              f"{'-' if until is None else until:>9}  {r['arrival']:<9}{r['labelled']:<9}"
              f"{', '.join(r['responsible'])} {'; '.join(r['reasons'])}")  # fmt: skip
    must = [r for r in rows if r["strength"] != "weak"]
    detected = sum(r["first_batch"] for r in must)
    detection_rate = sum(r["first_batch"] for r in rows) / len(rows)

    timings = time_monitoring(monitor, clean[0])
    print("\nmonitoring one 5,000-row batch (best of 3):")
    for key in ("profile_s", "feature_drift_s", "prediction_drift_s", "report_s", "monitor_s"):
        print(f"  {key:<20}{timings[key]:.3f}")
    print(f"  (model predict {timings['predict_s']:.3f}s is the service's; "
          f"HTML {timings['html_bytes'] / 1024:.0f} KiB)")  # fmt: skip

    full = [b for b in future if len(b) == BATCH_SIZE]
    future_checks = [monitor.check(b, f"future-{i}") for i, b in enumerate(full)]
    print(f"\nreal later batches (time order, genuine drift): "
          f"{sum(c['alert'] for c in future_checks)} of {len(full)} alert")  # fmt: skip
    for i, c in enumerate(future_checks):
        print(f"  future-{i}: {c['arrival']:<9}{c['labelled']:<9}{', '.join(c['responsible'])} "
              f"{'; '.join(c['reasons'])}")  # fmt: skip
    gradual = [r["gradual_batches_until_detection"] for r in rows if r["strength"] != "weak"]
    print(json.dumps({
        "clean_batches": N_CLEAN,
        "false_alarms": false_alarms,
        "false_alarm_rate": false_alarms / N_CLEAN,
        "clean_batches_with_minor": minors,
        "scenarios": len(rows),
        "moderate_strong_scenarios": len(must),
        "detected_first_batch": detected,
        "detection_rate_all_strengths": round(detection_rate, 3),
        "gradual_batches_until_detection_max": max((g for g in gradual if g), default=None),
        "gradual_undetected": sum(g is None for g in gradual),
        "monitor_5k_s": round(timings["monitor_s"], 3),
        "profile_5k_s": round(timings["profile_s"], 3),
        "future_batches": len(full),
        "future_alerts": sum(c["alert"] for c in future_checks),
        "bench_s": round(time.perf_counter() - start, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
