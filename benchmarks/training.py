"""Benchmark: the whole training flow on the full data set, step by step.

Runs the real Prefect flow (temporary local API unless PREFECT_API_URL is set) on the shipped
101,766 encounters with a private model store and artifact store, then prints the wall time of each
step, the holdout metrics of the tuned model and of the logistic-regression baseline, and the
whylogs profiling rate. The last line is one JSON object, so runs can be compared over time.

The holdout metrics are served-path metrics (`readmit.model.evaluate`): patient-disjoint holdout
rows scored as the service scores them. The benchmark checks that claim independently: it rebuilds
the holdout's raw feed rows (identifiers kept, outcome column dropped), passes each one through the
service's request contract and scores it alone with the registered model's per-record scorer, then
compares the metrics with the registered ones (`registered_equals_served`).

    .venv/bin/python benchmarks/training.py [--search-budget 90]

"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before xgboost is imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--search-budget", type=float, default=90.0)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="readmit-bench-"))
    os.environ["READMIT_BENTOML_HOME"] = os.environ["BENTOML_HOME"] = str(scratch / "bentoml")
    os.environ["READMIT_ARTIFACTS_URI"] = str(scratch / "artifacts")
    # Prefect's temporary API gets its own database: a shared ~/.prefect/prefect.db is locked by
    # any other Prefect process on the machine (tests, a worker), which slows the start-up.
    os.environ["PREFECT_HOME"] = str(scratch / "prefect")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    sys.path.insert(0, str(ROOT))
    from flows.training import training_flow

    start = time.perf_counter()
    out = training_flow(search_budget_s=args.search_budget)
    total = time.perf_counter() - start
    m, b = out["metrics"], out["baseline_metrics"]
    print(f"\n{'step':<12}{'seconds':>10}")
    for step, seconds in out["timings_s"].items():
        print(f"{step:<12}{seconds:>10.2f}")
    print(f"{'flow total':<12}{total:>10.2f}   (includes Prefect start-up)")
    print(f"\n{'model':<22}{'ROC AUC':>9}{'PR AUC':>9}{'Brier':>9}")
    print(f"{'xgboost (tuned)':<22}{m['roc_auc']:>9.4f}{m['pr_auc']:>9.4f}{m['brier']:>9.4f}")
    print(f"{'logistic regression':<22}{b['roc_auc']:>9.4f}{b['pr_auc']:>9.4f}{b['brier']:>9.4f}")
    print(f"\nwhylogs profiling: {out['profile_rows_per_s']:,.0f} rows/s")
    print(f"model {out['tag']} ({out['stage']}); store {scratch}")
    served = served_check(out["tag"])
    print(
        f"served path, one request at a time: ROC AUC {served['served_roc_auc_30d']:.4f}, "
        f"mean p {served['served_mean_p']:.4f} vs prevalence {served['prevalence']:.4f} "
        f"(gap {served['served_calibration_gap']:.4f}), ECE {served['served_ece']:.4f}; "
        f"equal to the registered metrics: {served['registered_equals_served']}"
    )
    print(json.dumps({
        "roc_auc_30d": round(m["roc_auc"], 4),
        "roc_auc_30d_baseline": round(b["roc_auc"], 4),
        "pr_auc_30d": round(m["pr_auc"], 4),
        "pr_auc_30d_baseline": round(b["pr_auc"], 4),
        "brier_30d": round(m["brier"], 4),
        "brier_30d_baseline": round(b["brier"], 4),
        "train_flow_s": round(total, 1),
        "profile_rows_per_s": round(out["profile_rows_per_s"]),
        **served,
    }))  # fmt: skip


def served_check(tag: str) -> dict[str, float | bool]:
    """Score the holdout's feed rows one request at a time, as the service does, and compare
    the figures with the registered ones."""
    import numpy as np

    from readmit import data, features, serving
    from readmit.model import evaluate, registry
    from readmit.schema import OUTCOME_COLUMNS
    from readmit.serving import scoring
    from readmit.settings import get_settings

    settings = get_settings()
    loaded = registry.load_model(tag)
    frame = data.read_encounters(settings.data_uri, settings.data_sha256).frame
    split = data.split_feed(
        frame, window="all", reference_fraction=settings.reference_fraction,
        holdout_fraction=0.2, seed=settings.seed,
    )  # fmt: skip
    holdout = split.holdout
    y = features.make_label(holdout, "<30").astype(int)
    rows = scoring.feed_records(holdout.drop(columns=list(OUTCOME_COLUMNS)))
    request = serving.predict_request_model()
    scorer = scoring.make_scorer(scoring.single_threaded(loaded.model))
    p = np.asarray(
        [
            scorer.predict_proba_one(
                serving.encounter_record(request(**r), settings.pseudonym_key_bytes)
            )
            for r in rows
        ]
    )
    metrics = evaluate.core_metrics(y, p)
    ece = evaluate.calibration_table(y, p)["ece"]
    registered = loaded.metadata["metrics"]
    same = all(
        abs(registered[k] - v) < 1e-9 for k, v in {**metrics, "ece": ece}.items() if v is not None
    )
    return {
        "served_roc_auc_30d": round(float(metrics["roc_auc"] or 0.0), 4),
        "served_mean_p": round(float(p.mean()), 4),
        "prevalence": round(float(y.mean()), 4),
        "served_calibration_gap": round(abs(float(p.mean()) - float(y.mean())), 4),
        "served_ece": round(float(ece), 4),
        "registered_equals_served": bool(same and registered.get("served_path") is True),
    }


if __name__ == "__main__":
    main()
