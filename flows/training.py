"""Training flow: validate -> split -> train + tune -> evaluate -> profile -> register (-> promote).

Thin by design: each task calls one `readmit` function and owns the I/O around it. Runs on Prefect's
temporary local API by default, or against a server when PREFECT_API_URL is set.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from readmit import (
    charts,
    data,
    evaluate,
    features,
    lineage,
    monitoring,
    registry,
    storage,
    train,
    validation,
)
from readmit.settings import get_settings

Window = Literal["all", "reference"]


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
    settings = get_settings()
    frame, result = validation.validate_bytes(batch.content)
    if not result.success:
        folder = validation.quarantine(
            batch.raw, result, artifacts_uri=settings.artifacts_uri, batch_name=batch_name
        )
        raise validation.ValidationFailed(result, folder)
    report_dir = settings.artifact("validation", f"{validation.utc_stamp()}-{batch_name}")
    storage.write_json(f"{report_dir}/report.json", result.to_dict())
    html = validation.render_report_html(result, f"Validation: {batch_name}")
    storage.write_text(f"{report_dir}/report.html", html)
    get_run_logger().info(
        "validation passed: %d expectations on %d rows", result.n_expectations, result.n_rows
    )
    return frame, {**result.to_dict(), "report_uri": f"{report_dir}/report.html"}


@task(cache_policy=NO_CACHE)
def split(frame: Any, window: Window, holdout_fraction: float, seed: int) -> tuple[Any, Any]:
    """Training cohort (died/hospice excluded, optionally the reference window) split by patient."""
    settings = get_settings()
    cohort = data.exclude_died_or_hospice(frame)
    if window == "reference":
        cohort, _ = data.reference_and_batches(cohort, settings.reference_fraction)
    train_frame, holdout = data.split_by_patient(cohort, holdout_fraction, seed)
    get_run_logger().info(
        "cohort %d encounters -> train %d / patient-disjoint holdout %d",
        len(cohort),
        len(train_frame),
        len(holdout),
    )
    return train_frame, holdout


@task(cache_policy=NO_CACHE)
def fit(train_frame: Any, label: str, seed: int, search_budget_s: float) -> train.TrainingResult:
    """Baseline + tuned XGBoost on patient-grouped CV."""
    return train.train_models(train_frame, label=label, seed=seed, search_budget_s=search_budget_s)


@task(cache_policy=NO_CACHE)
def assess(result: train.TrainingResult, holdout: Any, label: str) -> dict[str, Any]:
    """Holdout evaluation of the tuned model and of the baseline, side by side."""
    model_eval = evaluate.evaluate_model(result.model, holdout, label=label)
    baseline_eval = evaluate.evaluate_model(result.baseline, holdout, label=label)
    return {"model": model_eval, "baseline": baseline_eval}


@task(cache_policy=NO_CACHE)
def write_reference(
    train_frame: Any, holdout: Any, model: Any, label: str, version: str
) -> tuple[str, float]:
    """Monitoring reference of the model: whylogs profile of the training data, drift thresholds
    calibrated on no-drift samples, holdout prediction profile and performance baseline."""
    uris = monitoring.ReferenceUris.for_model(get_settings().artifacts_uri, version)
    holdout_p = np.asarray(model.predict_proba(holdout))[:, 1]
    holdout_y = features.make_label(holdout, label)
    rows_per_s = monitoring.write_reference(uris, train_frame, holdout_y, holdout_p)
    get_run_logger().info("reference profile: %s (%.0f rows/s)", uris.profile, rows_per_s)
    return uris.profile, rows_per_s


@task(cache_policy=NO_CACHE)
def register(
    result: train.TrainingResult,
    evaluations: dict[str, Any],
    metadata: dict[str, Any],
    version: str,
    promote_if_passing: bool,
) -> dict[str, Any]:
    """Save to the model store; a first model becomes production only if it passes the gates."""
    settings = get_settings()
    gate = evaluate.check_absolute_gates(
        evaluations["model"],
        settings.min_roc_auc,
        settings.max_subgroup_auc_gap,
        settings.subgroup_min_size,
    )
    metadata = {**metadata, "absolute_gates": gate.to_dict()}
    tag = registry.save_model(result.model, metadata, version=version)
    has_production = registry.production_tag() is not None
    if promote_if_passing and gate.passed and not has_production:
        registry.promote(tag, reason="first model passing the absolute gates")
        stage = "production"
    else:
        stage = "candidate"
    exported = registry.publish_to_store(tag)
    logger = get_run_logger()
    logger.info("registered %s as %s; exported to %s", tag, stage, exported)
    if not gate.passed:
        logger.warning("absolute gates failed: %s", "; ".join(gate.reasons))
    elif has_production:
        logger.info("a production model exists: challengers are promoted by the retraining flow")
    return {"tag": tag, "stage": stage, "gates": gate.to_dict()}


def publish_artifacts(summary: dict[str, Any], evaluations: dict[str, Any], version: str) -> str:
    """Prefect artifacts for the UI, plus the reports in the artifact store; returns report dir."""
    settings = get_settings()
    model_eval, baseline_eval = evaluations["model"], evaluations["baseline"]
    report_dir = settings.artifact("models", version)
    storage.write_json(
        f"{report_dir}/evaluation.json",
        {"model": model_eval.to_dict(), "baseline": baseline_eval.to_dict()},
    )
    cal = model_eval.calibration
    svg = charts.calibration_svg(cal["mean_predicted"], cal["observed_rate"], cal["count"])
    storage.write_text(f"{report_dir}/calibration.svg", svg)
    create_table_artifact(
        key="data-summary", table=[summary["data"]], description="Training data (aggregates only)"
    )
    create_table_artifact(
        key="validation-summary",
        table=[
            {
                k: summary["validation"][k]
                for k in ("success", "n_rows", "n_expectations", "report_uri")
            }
        ],
        description="Great Expectations result",
    )
    create_table_artifact(
        key="holdout-metrics",
        table=[
            {"model": "xgboost (tuned)", **model_eval.headline()},
            {"model": "logistic regression (baseline)", **baseline_eval.headline()},
        ],
        description=f"Patient-disjoint holdout, label {summary['label_definition']}",
    )
    create_table_artifact(
        key="subgroup-metrics",
        table=model_eval.subgroup_rows(),
        description="Holdout metrics by race, gender and age band",
    )
    create_markdown_artifact(
        key="calibration-plot",
        markdown=charts.calibration_markdown(svg, cal, model_eval.metrics, report_dir),
        description="Reliability diagram of the holdout predictions",
    )
    return report_dir


@flow(name="training", log_prints=True)
def training_flow(
    data_uri: str | None = None,
    label: Literal["<30", "any"] = "<30",
    window: Window = "all",
    holdout_fraction: float = 0.2,
    search_budget_s: float = 90.0,
    promote_if_passing: bool = True,
) -> dict[str, Any]:
    """Train, evaluate and register a readmission model from a raw encounters file.

    Args:
        data_uri: Path or fsspec URL of raw encounters; defaults to the shipped data set.
        label: "<30" (30-day readmission, the clinical standard) or "any" readmission.
        window: "all" encounters, or only the oldest "reference" window (the rest is replayed
            later as future batches by the simulation).
        holdout_fraction: Share of patients held out for the final evaluation.
        search_budget_s: Wall-time budget of the hyperparameter search.
        promote_if_passing: Promote a first model that passes the absolute gates.
    """
    settings = get_settings()
    uri = data_uri or settings.data_uri
    timings: dict[str, float] = {}
    with lineage.timer(timings, "read"):
        batch = read_batch(uri)
    with lineage.timer(timings, "validate"):
        frame, validation_summary = validate_batch(batch, lineage.batch_name(uri))
    with lineage.timer(timings, "split"):
        train_frame, holdout = split(frame, window, holdout_fraction, settings.seed)
    with lineage.timer(timings, "train"):
        result = fit(train_frame, label, settings.seed, search_budget_s)
    with lineage.timer(timings, "evaluate"):
        evaluations = assess(result, holdout, label)
    version = registry.new_version()
    with lineage.timer(timings, "reference"):
        profile_uri, profile_rows_per_s = write_reference(
            train_frame, holdout, result.model, label, version
        )
    summary = {
        "data": {
            "uri": uri,
            "sha256": batch.sha256,
            **lineage.summarize_encounters(frame),
            "train_rows": len(train_frame),
            "holdout_rows": len(holdout),
            "holdout_fraction": holdout_fraction,
        },
        "validation": validation_summary,
        "label_definition": label,
    }
    metadata = lineage.model_metadata(
        summary=summary,
        result=result,
        evaluations=evaluations,
        profile_uri=profile_uri,
        timings=timings,
        window=window,
    )
    with lineage.timer(timings, "register"):
        registration = register(result, evaluations, metadata, version, promote_if_passing)
    report_dir = publish_artifacts(summary, evaluations, version)
    return {
        **registration,
        "metrics": evaluations["model"].headline(),
        "baseline_metrics": evaluations["baseline"].headline(),
        "threshold": evaluations["model"].threshold,
        "artifacts_uri": settings.artifacts_uri,
        "report_dir": report_dir,
        "profile_uri": profile_uri,
        "profile_rows_per_s": profile_rows_per_s,
        "validation_report": validation_summary["report_uri"],
        "timings_s": timings,
        "bentoml_home": settings.bentoml_home,
    }


if __name__ == "__main__":
    training_flow()
