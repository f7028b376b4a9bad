"""Training flow: validate -> split -> train + tune -> evaluate -> profile -> register (-> promote,
-> serve).

Thin by design: the tasks (`flows/tasks.py` and below) each call one `readmit` function and own
the I/O around it. Runs on Prefect's temporary local API by default, or against a server when
PREFECT_API_URL is set.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.tasks import assess, fit, read_batch, validate_batch, write_reference
from readmit import data, storage
from readmit.model import gates, lifecycle, lineage, registry, train
from readmit.reports import charts
from readmit.schema import LabelDefinition
from readmit.settings import get_settings

Window = Literal["all", "reference"]


@task(cache_policy=NO_CACHE)
def split(frame: Any, window: Window, holdout_fraction: float, seed: int) -> data.FeedSplit:
    """The feed split by patient; training and evaluation use its cohort rows."""
    settings = get_settings()
    feed = data.split_feed(
        frame,
        window=window,
        reference_fraction=settings.reference_fraction,
        holdout_fraction=holdout_fraction,
        seed=seed,
    )
    get_run_logger().info(
        "feed %d encounters -> train %d / patient-disjoint holdout %d (cohort rows; "
        "died/hospice excluded)",
        len(feed.train_feed) + len(feed.holdout_feed),
        len(feed.train),
        len(feed.holdout),
    )
    return feed


@task(cache_policy=NO_CACHE)
def register(
    result: train.TrainingResult,
    evaluations: dict[str, Any],
    metadata: dict[str, Any],
    version: str,
    promote_if_passing: bool,
) -> dict[str, Any]:
    """Gate, save to the model store, and settle the stage (`lifecycle.decide_first`)."""
    settings = get_settings()
    decision = gates.gate(evaluations["model"], None, gates.GatePolicy.from_settings(settings))
    tag = registry.save_model(
        result.model, {**metadata, "gate": decision.to_dict()}, version=version
    )
    outcome = lifecycle.decide_first(
        decision,
        has_production=registry.production_loads(settings),
        promote_if_passing=promote_if_passing,
    )
    lifecycle.apply(tag, outcome, decision, champion=None, artifacts_uri=settings.artifacts_uri)
    exported = registry.publish_to_store(tag)
    get_run_logger().info(
        "registered %s as %s (%s); exported to %s", tag, outcome.stage, outcome.reason, exported
    )
    return {"tag": tag, "stage": outcome.stage, "gate": decision.to_dict()}


def publish_artifacts(summary: dict[str, Any], evaluations: dict[str, Any], version: str) -> str:
    """Prefect artifacts for the UI, plus the reports in the artifact store; returns report dir."""
    settings = get_settings()
    model_eval, baseline_eval = evaluations["model"], evaluations["baseline"]
    report_dir = settings.layout.model_dir(version)
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
        description=(
            f"Patient-disjoint holdout scored as served (outcomes split off, the service's "
            f"scorer, one encounter at a time), label {summary['label_definition']}"
        ),
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


def serve_promoted(tag: str) -> dict[str, Any]:
    """Serve the model this run promoted: the deployment flow, as a subflow of this run."""
    from flows.deployment import deployment_flow

    get_run_logger().info("serving the promoted model %s", tag)
    return deployment_flow(model_tag=tag)


@flow(name="training", log_prints=True)
def training_flow(
    data_uri: str | None = None,
    label: LabelDefinition = "<30",
    window: Window = "all",
    holdout_fraction: float = 0.2,
    search_budget_s: float = 90.0,
    promote_if_passing: bool = True,
    dask_address: str | None = None,
    deploy_promoted: bool = False,
) -> dict[str, Any]:
    """Train, evaluate and register a readmission model from a raw encounters file.

    Args:
        data_uri: Path or fsspec URL of raw encounters; defaults to the shipped data set.
        label: "<30" (30-day readmission, the clinical standard) or "any" readmission.
        window: "all" encounters, or the oldest "reference" window (the rest is replayed).
        holdout_fraction: Share of patients held out for the final evaluation.
        search_budget_s: Wall-time budget of the search and the final refit.
        promote_if_passing: Promote a first model that passes the gate.
        dask_address: Where the search runs: "local" (a LocalCluster), "tcp://host:8786" or
            "none" (in-process); default `READMIT_DASK_ADDRESS`, unset meaning in-process.
        deploy_promoted: Serve a model this run promoted (deployment flow, blue/green), as
            retraining does for a challenger; on for the stack's `training` deployment.
    """
    settings, timings = get_settings(), lineage.new_timings()
    uri = data_uri or settings.data_uri
    with lineage.timer(timings, "read"):
        batch = read_batch(uri)
    with lineage.timer(timings, "validate"):
        frame, validation_summary = validate_batch(batch, lineage.batch_name(uri))
    with lineage.timer(timings, "split"):
        feed = split(frame, window, holdout_fraction, settings.seed)
    with lineage.timer(timings, "train"):
        result = fit(feed.train, label, settings.seed, search_budget_s, dask_address)
    with lineage.timer(timings, "evaluate"):
        evaluations = assess(result, feed.holdout, label)
    version = registry.new_version()
    with lineage.timer(timings, "reference"):
        profile_uri, profile_rows_per_s = write_reference(
            feed.train_feed, feed.holdout_feed, result.model, label, version
        )
    summary = lineage.training_summary(
        uri, batch.sha256, frame, feed, validation_summary, label, holdout_fraction
    )
    metadata = lineage.model_metadata(summary, result, evaluations, profile_uri, timings, window)
    with lineage.timer(timings, "register"):
        registration = register(result, evaluations, metadata, version, promote_if_passing)
    if deploy_promoted and registration["stage"] == "production":
        registration["deployment"] = serve_promoted(registration["tag"])
    report_dir = publish_artifacts(summary, evaluations, version)
    return {
        **registration,
        **lineage.run_outcome(evaluations, result, timings),
        "artifacts_uri": settings.artifacts_uri,
        "report_dir": report_dir,
        "profile_uri": profile_uri,
        "profile_rows_per_s": profile_rows_per_s,
        "validation_report": validation_summary["report_uri"],
        "bentoml_home": settings.bentoml_home,
    }


if __name__ == "__main__":
    training_flow()
