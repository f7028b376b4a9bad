"""Benchmark: model quality on the full data, patient-disjoint holdout (no Prefect, no registry).

Trains exactly what the training flow trains (`readmit.model.train.train_models`) on the shipped
data after the died/hospice exclusion, split by patient (holdout 0.2, seed 42), and evaluates the
tuned XGBoost and the logistic-regression baseline on the holdout. Prints CV and holdout figures,
the search trials and the timings; the last line is one JSON object.

    .venv/bin/python benchmarks/model_quality.py [--label "<30"] [--search-budget 90]

"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

# OpenMP threads that spin while waiting are several times slower on a shared 2-core machine;
# libgomp reads this once, when XGBoost loads, so it is set before any import below.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd

from readmit.schema import INPUT_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "raw" / "diabetic_data.csv.gz"


def _records(frame: Any) -> list[dict[str, Any]]:
    return [
        {k: (None if v is pd.NA else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def fastpath_figures(model: Any, holdout: Any) -> dict[str, float]:
    """Parity of the compiled per-record scorer with the batch pipeline, and its latency."""
    from readmit.serving import fastpath

    scorer = fastpath.compile_scorer(model)
    rows = holdout.head(500)
    expected = np.asarray(model.predict_proba(rows))[:, 1]
    diff = float(np.max(np.abs(scorer.predict_proba_many(_records(rows)) - expected)))
    record = {k: v for k, v in _records(rows.head(1))[0].items() if k in INPUT_COLUMNS}
    times = []
    for i in range(2200):
        start = time.perf_counter()
        scorer.predict_proba_one(record)
        if i >= 200:
            times.append(time.perf_counter() - start)
    many = _records(holdout.head(1000))
    start = time.perf_counter()
    scorer.predict_proba_many(many)
    many_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(50):
        model.predict_proba(rows.iloc[[i]])
    pipeline_s = (time.perf_counter() - start) / 50
    return {
        "parity_rows": len(rows),
        "parity_max_abs_diff": diff,
        "one_p50_ms": float(np.percentile(times, 50) * 1e3),
        "one_p99_ms": float(np.percentile(times, 99) * 1e3),
        "many_rows_per_s": len(many) / many_s,
        "pipeline_one_row_ms": pipeline_s * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", choices=["<30", "any"], default="<30")
    parser.add_argument("--search-budget", type=float, default=90.0)
    parser.add_argument("--n-iter", type=int, default=60)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from readmit import data
    from readmit.model import evaluate, train

    frame = data.read_encounters(str(DATA)).frame
    cohort = data.exclude_died_or_hospice(frame)
    train_frame, holdout = data.split_by_patient(cohort, 0.2, args.seed)
    start = time.perf_counter()
    result = train.train_models(
        train_frame,
        label=args.label,
        seed=args.seed,
        search_budget_s=args.search_budget,
        n_iter=args.n_iter,
    )
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    model_eval = evaluate.evaluate_model(result.model, holdout, label=args.label)
    baseline_eval = evaluate.evaluate_model(result.baseline, holdout, label=args.label)
    evaluate_s = time.perf_counter() - start

    print(f"train {len(train_frame)} rows / holdout {len(holdout)} rows, label {args.label}")
    print(f"features: {len(result.feature_names)}; best params: {result.best_params}")
    print("search trials (mean CV ROC AUC, folds run, seconds):")
    for t in result.search_trials:
        print(f"  {t['mean_auc']:.4f}  {len(t['fold_auc'])}  {t['seconds']:6.1f}s  {t['params']}")
    cv = result.cv_scores
    print(f"\n{'':22}{'CV ROC AUC':>11}{'OOF Brier':>10}{'+isotonic':>10}")
    for name in ("xgboost", "baseline"):
        c = cv[name]
        print(
            f"{name:22}{c['oof_roc_auc']:>11.4f}{c['oof_brier']:>10.4f}{c['oof_brier_isotonic']:>10.4f}"
        )
    head = ("ROC AUC", 9), ("PR AUC", 9), ("Brier", 9), ("ECE", 8), ("thresh", 8)
    head += ("sens", 7), ("spec", 7), ("PPV", 7)
    print(f"\n{'holdout':22}" + "".join(f"{h:>{w}}" for h, w in head))
    for name, ev in (("xgboost (tuned)", model_eval), ("logistic regression", baseline_eval)):
        m = ev.metrics
        print(
            f"{name:22}{m['roc_auc']:>9.4f}{m['pr_auc']:>9.4f}{m['brier']:>9.4f}{m['ece']:>8.4f}"
            f"{ev.threshold:>8.3f}{m['sensitivity']:>7.3f}{m['specificity']:>7.3f}{m['ppv']:>7.3f}"
        )
    print(f"\ntimings (s): {result.timings}; train_models {train_s:.1f}; evaluate {evaluate_s:.1f}")
    fast = fastpath_figures(result.model, holdout)
    print(
        f"fast path: parity max |diff| {fast['parity_max_abs_diff']:.1e} on {fast['parity_rows']} "
        f"rows; one record p50 {fast['one_p50_ms']:.3f} ms, p99 {fast['one_p99_ms']:.3f} ms; "
        f"{fast['many_rows_per_s']:,.0f} rows/s in 1,000-record lists; batch pipeline one row "
        f"{fast['pipeline_one_row_ms']:.1f} ms"
    )
    m, b = model_eval.metrics, baseline_eval.metrics
    print(json.dumps({
        "label": args.label,
        "roc_auc": m["roc_auc"], "pr_auc": m["pr_auc"], "brier": m["brier"],
        "roc_auc_baseline": b["roc_auc"], "pr_auc_baseline": b["pr_auc"],
        "brier_baseline": b["brier"],
        "cv_roc_auc": cv["xgboost"]["oof_roc_auc"],
        "cv_roc_auc_baseline": cv["baseline"]["oof_roc_auc"],
        "train_s": round(train_s, 1), "evaluate_s": round(evaluate_s, 1),
        "trials": cv["trials"], "trials_complete": cv["trials_complete"],
        "fastpath_one_p50_ms": round(fast["one_p50_ms"], 4),
        "fastpath_parity_max_abs_diff": fast["parity_max_abs_diff"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
