"""Benchmark: drift detection on clean and drifted batches, and the cost of monitoring one batch.

Data: the shipped feed (every discharge disposition), time-ordered; the reference period is the
oldest `READMIT_REFERENCE_FRACTION` (0.6). Its patients are split three ways (disjoint):
- reference, 60%: the training patients. The real production pipeline (`readmit.model.train`, short
  search) is fitted on their cohort rows, and the monitoring reference is written by the
  training flow's own code (`monitoring.build_reference`): the feed profile, thresholds, the
  served-path prediction reference and the performance baseline;
- holdout, 20%: the model's holdout (feed rows for the prediction reference, cohort rows for the
  performance baseline);
- evaluation, 20%: unknown patients, the pool of clean batches. A random 10% of the training
  patients' encounters join the pool as "known patients": withheld from the model's fit but kept
  in its patient-history store (with the history before each), so they are scored with their
  history and out-of-sample, like a known patient's new encounter.

Clean batches (`raw_clean_*`) are feed rows as a hospital sends them: unlabelled, every
discharge disposition, patients the model knows and patients it does not; scored as served.
(Before, clean batches were cohort rows prepared the way the reference was.)

Each batch is monitored on two paths, as in production (`monitoring.served_batch`,
`monitoring.monitor_batch`):
- arrival: features (no outcome) + prediction drift of the served probabilities;
- outcomes arrived: the label's drift + realised ROC AUC and calibration on the cohort rows.

A batch "alerts" when severity is moderate or major or performance dropped. Scenarios are
injected into raw clean batches. The last line is one JSON object.

    .venv/bin/python benchmarks/drift.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before xgboost is imported

import pandas as pd

from readmit import data, features, monitoring
from readmit.model import train
from readmit.monitoring import drift
from readmit.reports.report import render_drift_report_html
from readmit.schema import LABEL_COLUMN
from readmit.serving import scoring
from readmit.settings import get_settings

BATCH_SIZE = 5000
N_CLEAN = 20
RAMP = 5
KNOWN_SHARE = 0.1
"""Share of the training patients' encounters withheld from the fit (known patients)."""
SEARCH_BUDGET_S = 20.0


class Monitor:
    """The production pipeline and its monitoring reference, as the training flow writes it."""

    def __init__(
        self, train_feed: pd.DataFrame, holdout_feed: pd.DataFrame, known: pd.DataFrame, root: Path
    ) -> None:
        fitted_on = data.FeedSplit(train_feed.drop(index=known.index), holdout_feed)
        result = train.train_models(fitted_on.train, search_budget_s=SEARCH_BUDGET_S)
        self.model = result.model
        # The history store holds every training encounter, the withheld ones included.
        self.model.steps[0][1].fit(data.exclude_died_or_hospice(train_feed))
        self.scorer = scoring.make_scorer(scoring.single_threaded(self.model))
        uris = monitoring.ReferenceUris.for_model(str(root), "bench")
        monitoring.build_reference(uris, train_feed, holdout_feed, self.model, "<30")
        self.reference = monitoring.load_reference(uris)

    def arrival(self, batch: pd.DataFrame, name: str, timings: dict | None = None) -> Any:
        """Features + prediction drift of a batch as it arrives (no outcome; timed if asked)."""
        t = {} if timings is None else timings
        unlabelled = batch.drop(columns=[LABEL_COLUMN], errors="ignore")
        start = time.perf_counter()
        probabilities = scoring.served_probabilities(self.model, unlabelled, self.scorer)
        t["predict_s"] = time.perf_counter() - start
        start = time.perf_counter()
        report = monitoring.monitor_batch(self.reference, name, unlabelled, probabilities)
        t["monitor_s"] = time.perf_counter() - start
        start = time.perf_counter()
        html = render_drift_report_html(report, f"Drift report {name}")
        json.dumps(report.to_dict())
        t["report_s"] = time.perf_counter() - start
        t["html_bytes"] = len(html)
        return report

    def labelled(self, batch: pd.DataFrame, name: str) -> Any:
        """The label's drift and realised performance on the cohort rows, once outcomes arrived."""
        unlabelled = batch.drop(columns=[LABEL_COLUMN])
        probabilities = scoring.served_probabilities(self.model, unlabelled, self.scorer)
        cohort = data.in_cohort(batch)
        labels = features.make_label(batch.loc[cohort])
        label_only = batch[[LABEL_COLUMN]]
        return monitoring.monitor_batch(
            self.reference, name, label_only, probabilities, labels, cohort
        )

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


def withhold_known(train_feed: pd.DataFrame, share: float, seed: int) -> pd.DataFrame:
    """A random `share` of the training patients' encounters: the model will know them (they
    stay in its patient-history store, with the history before each) but not fit on them, so
    their served probabilities are out-of-sample, like a known patient's new encounter."""
    return train_feed.sample(frac=share, random_state=seed)


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
    best["monitor_s"] += best["report_s"]
    return best


def count_alerts(monitor: Monitor, batches: list[pd.DataFrame], kind: str) -> dict[str, Any]:
    checks = [monitor.check(b, f"{kind}-{i}") for i, b in enumerate(batches)]
    alarms = sum(c["alert"] for c in checks)
    minors = sum(c["arrival"] != "none" or c["labelled"] != "none" for c in checks)
    print(f"{kind} clean batches: {len(batches)}, false alarms: {alarms}, any minor: {minors}, "
          f"max feature ratio {max(c['max_ratio'] for c in checks):.2f}")  # fmt: skip
    for i, c in enumerate(checks):
        if c["alert"]:
            print(
                f"  {kind}-{i}: {c['arrival']} / {c['labelled']} {c['responsible']} {c['reasons']}"
            )
    return {"alarms": alarms, "minors": minors}


def main() -> None:
    settings = get_settings()
    start = time.perf_counter()
    feed = data.read_encounters(settings.data_uri, settings.data_sha256).frame
    period, future = data.reference_and_batches(feed, settings.reference_fraction, BATCH_SIZE)
    train_feed, holdout_feed, evaluation = split_reference_period(period, settings.seed)
    known = withhold_known(train_feed, KNOWN_SHARE, settings.seed)
    root = Path(tempfile.mkdtemp(prefix="readmit-drift-"))
    monitor = Monitor(train_feed, holdout_feed, known, root)
    setup_s = time.perf_counter() - start
    baseline = monitor.reference.performance
    pool = pd.concat([evaluation, known], ignore_index=True)
    print(f"training feed {len(train_feed):,} rows, holdout feed {len(holdout_feed):,}, "
          f"evaluation pool {len(pool):,} ({len(known):,} encounters of known patients, "
          f"{int((~data.in_cohort(pool)).sum()):,} died/hospice); holdout AUC "
          f"{baseline.roc_auc:.3f}, ECE {baseline.ece:.4f}; set-up {setup_s:.1f}s")  # fmt: skip

    clean = drift.sample_batches(pool, N_CLEAN, BATCH_SIZE, seed=3)
    raw = count_alerts(monitor, clean, "raw")
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
    for key in ("monitor_s", "report_s"):
        print(f"  {key:<20}{timings[key]:.3f}")
    print(f"  (served-path scoring {timings['predict_s']:.3f}s is the service's; "
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
        "raw_clean_batches": N_CLEAN,
        "raw_clean_false_alarms": raw["alarms"],
        "raw_clean_batches_with_minor": raw["minors"],
        "clean_batches": N_CLEAN,
        "false_alarms": raw["alarms"],
        "scenarios": len(rows),
        "moderate_strong_scenarios": len(must),
        "detected_first_batch": detected,
        "detection_rate_all_strengths": round(detection_rate, 3),
        "gradual_batches_until_detection_max": max((g for g in gradual if g), default=None),
        "gradual_undetected": sum(g is None for g in gradual),
        "monitor_5k_s": round(timings["monitor_s"], 3),
        "served_scoring_5k_s": round(timings["predict_s"], 3),
        "future_batches": len(full),
        "future_alerts": sum(c["alert"] for c in future_checks),
        "bench_s": round(time.perf_counter() - start, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
