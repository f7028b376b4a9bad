"""Lineage: what a registered model was made from, recorded in its metadata."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from readmit.pseudonyms import patient_groups
from readmit.settings import PROJECT_ROOT


def git_commit() -> str | None:
    """Commit of the code that trained the model; None outside git, `+dirty` if edited."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{sha}+dirty" if dirty else sha


def utc_now() -> str:
    """ISO-8601 UTC timestamp, second precision."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def _patients(frame: pd.DataFrame) -> int | None:
    try:
        return int(patient_groups(frame).nunique())
    except ValueError:
        return None


def summarize_encounters(frame: pd.DataFrame) -> dict[str, Any]:
    """Aggregate facts about a batch, safe to share: counts and rates, never identifiers."""
    summary: dict[str, Any] = {
        "rows": len(frame),
        "patients": _patients(frame),
        "columns": frame.shape[1],
        "missing_cells_share": round(float(frame.isna().mean().mean()), 4) if len(frame) else 0.0,
    }
    if "readmitted" in frame and len(frame):
        rates = frame["readmitted"].value_counts(normalize=True).round(4)
        summary["label_rates"] = {str(k): float(v) for k, v in rates.items()}
    return summary


VALIDATION_KEYS = ("success", "n_rows", "n_expectations")


def new_timings() -> dict[str, float]:
    """An empty step -> seconds table (for `timer`)."""
    return {}


@contextmanager
def timer(timings: dict[str, float], step: str) -> Iterator[None]:
    """Record the wall time of a step (seconds) into `timings[step]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[step] = round(time.perf_counter() - start, 3)


def batch_name(uri: str) -> str:
    """A short, path-safe name for a batch from its URI (file name without extensions)."""
    stem = uri.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0] or "batch"
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem)[:60]


def training_summary(
    uri: str,
    sha256: str,
    frame: Any,
    feed: Any,
    validation: dict[str, Any],
    label: str,
    holdout_fraction: float,
) -> dict[str, Any]:
    """What a training run read: the data (aggregates only), its validation, the label."""
    return {
        "data": {
            "uri": uri,
            "sha256": sha256,
            **summarize_encounters(frame),
            "train_rows": len(feed.train),
            "holdout_rows": len(feed.holdout),
            "holdout_fraction": holdout_fraction,
        },
        "validation": validation,
        "label_definition": label,
    }


def run_outcome(
    evaluations: dict[str, Any], result: Any, timings: dict[str, float]
) -> dict[str, Any]:
    """The figures a training run returns: headline metrics of both models, threshold, timings
    and the search's trials."""
    return {
        "metrics": evaluations["model"].headline(),
        "baseline_metrics": evaluations["baseline"].headline(),
        "threshold": evaluations["model"].threshold,
        "timings_s": timings,
        "search_trials": result.search_trials,
    }


def model_metadata(
    summary: dict[str, Any],
    result: Any,
    evaluations: dict[str, Any],
    profile_uri: str,
    timings: dict[str, float],
    window: str,
) -> dict[str, Any]:
    """Everything needed to trust, compare and reproduce a model: its lineage."""
    model_eval, baseline_eval = evaluations["model"], evaluations["baseline"]
    return {
        "trained_at": utc_now(),
        "git_commit": git_commit(),
        "label_definition": summary["label_definition"],
        "threshold": model_eval.threshold,
        "threshold_rule": model_eval.threshold_rule,
        "metrics": model_eval.metrics,
        "baseline_metrics": baseline_eval.metrics,
        "subgroup_metrics": model_eval.subgroup_rows(),
        "calibration": model_eval.calibration,
        "params": result.best_params,
        "cv": result.cv_scores,
        "feature_names": list(result.feature_names),
        "data": summary["data"],
        "data_sha256": summary["data"]["sha256"],
        "training_window": window,
        "holdout_fraction": summary["data"].get("holdout_fraction"),
        "validation": {
            k: v
            for k, v in summary["validation"].items()
            if k in VALIDATION_KEYS or "success" not in summary["validation"]
        },
        "validation_report": summary["validation"].get("report_uri"),
        "profile_uri": profile_uri,
        "timings_s": {**result.timings, **timings},
    }
