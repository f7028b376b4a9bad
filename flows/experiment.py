"""Experiment flow: start a live experiment, judge it as outcomes mature, stop it.

One flow, three actions (the `experiment` deployment in prefect.yaml; its daily schedule runs
`evaluate`, a person runs `start` or `stop` from the Prefect UI with "Run > Custom run"):

* `start`: the production model (champion) and a registered `challenger` are packed into one
  bento, in `shadow` or `canary` mode, and the running service is rolled to it (blue/green: no
  request fails). The spec is stored (`experiments/current.json`) and audited.
* `evaluate`: the served rows of the experiment that monitoring kept, joined to the outcomes that
  matured, are judged by the anytime-valid test (`readmit.experiments`). Each look writes the
  decision, the daily confidence sequence and a self-contained report, and publishes a table and
  a chart as Prefect artifacts. Once it decides (challenger better, worse, or inconclusive at
  the maximum sample) it emits `readmit.experiment.decided`, audits the decision, and returns
  the service to the champion alone. A better challenger goes to the `promotion` deployment (its
  trigger on the event), which asks a person to approve; a worse or inconclusive one is archived
  with the reason.
* `stop`: ends the experiment by hand (champion alone again), with the reason audited.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from readmit.data import outcomes
from readmit.experiments import evaluation, sequential, state
from readmit.experiments.spec import DEFAULT_CANARY_SHARE, ExperimentSpec, Mode
from readmit.model import registry
from readmit.ops import audit
from readmit.reports import charts
from readmit.reports import experiment as report
from readmit.schema import LabelDefinition
from readmit.serving.prediction_log import TIME_COLUMN
from readmit.settings import get_settings

EXPERIMENT_DECIDED = "readmit.experiment.decided"
Action = Literal["evaluate", "start", "stop"]


def roll_service(spec: ExperimentSpec | None) -> dict[str, Any] | None:
    """Roll a running service to the experiment's bento (or, with None, to the champion alone)
    through the deployment flow's blue/green release; None where no service runs here."""
    from flows.deployment import deployment_flow
    from readmit.ops import deploy

    if deploy.running_server() is None:
        get_run_logger().info("no running service here: the next deployment serves the change")
        return None
    return deployment_flow(experiment=spec.to_dict() if spec else None, containerize=False)


@task(cache_policy=NO_CACHE)
def start(mode: Mode, challenger: str, share: float, by: str, redeploy: bool) -> dict[str, Any]:
    """Record a new experiment and put it in front of traffic."""
    settings = get_settings()
    champion = registry.production_tag()
    if champion is None:
        raise registry.NoModelError("no production model: an experiment needs a champion")
    registry.load_model(challenger)  # a challenger that cannot load never starts (signature too)
    spec = state.new_spec(mode, champion, challenger, share, by)
    state.begin(settings.layout, spec)
    audit.append(settings.artifacts_uri, "experiment_started", **spec.to_dict())
    get_run_logger().info("experiment %s: %s %s beside %s", spec.id, mode, challenger, champion)
    deployed = roll_service(spec) if redeploy else None
    return {"experiment": spec.to_dict(), "deployment": deployed}


@task(cache_policy=NO_CACHE)
def stop(reason: str, redeploy: bool) -> dict[str, Any]:
    """End the running experiment by hand: the champion serves alone again."""
    settings = get_settings()
    spec = state.current(settings.layout)
    if spec is None:
        raise state.ExperimentStateError("no experiment is running")
    deployed = roll_service(None) if redeploy else None
    ended = state.end(settings.layout, spec, "stopped", reason)
    audit.append(settings.artifacts_uri, "experiment_stopped", id=spec.id, reason=reason)
    return {"experiment": ended, "deployment": deployed}


@task(cache_policy=NO_CACHE)
def look(spec: ExperimentSpec, policy: sequential.SequentialPolicy) -> dict[str, Any] | None:
    """Judge the experiment on every matured outcome so far; store and publish the look."""
    settings, logger = get_settings(), get_run_logger()
    label: LabelDefinition = registry.model_metadata(spec.champion).get("label_definition", "<30")
    served = state.served_rows(settings.layout, spec, settings.monitor_window_seconds)
    seen = evaluation.experiment_data(
        served, outcomes.read_received(settings.artifacts_uri), spec, label
    )
    try:
        result = evaluation.judge(seen, spec, policy)
    except evaluation.NotEnoughOutcomes as exc:
        logger.info("experiment %s: %d served cohort encounters; %s", spec.id, seen.served, exc)
        return None
    looks = evaluation.daily_looks(seen, spec, policy, TIME_COLUMN)
    svg = report.sequence_svg(looks)
    html = report.render_experiment_report(spec.to_dict(), result.to_dict(), looks, svg)
    url = state.write_look(settings.layout, spec, result.to_dict(), looks, html)
    rows = report.result_rows(spec.to_dict(), result.to_dict())
    create_table_artifact(key="experiment-decision", table=rows,
                          description=f"Experiment {spec.id}: {result.outcome}")  # fmt: skip
    create_markdown_artifact(
        key="experiment-sequence",
        markdown=f"![confidence sequence]({charts.svg_data_uri(svg)})\n\nReport: `{url}`",
        description="Loss difference and its anytime-valid interval, day by day",
    )
    logger.info("experiment %s after %d outcomes: %s (%s difference %.5f [%.5f, %.5f])",
                spec.id, result.n, result.outcome, result.metric, result.estimate,
                result.cs_lower, result.cs_upper)  # fmt: skip
    return {**result.to_dict(), "report": url}


def conclude(spec: ExperimentSpec, result: dict[str, Any], redeploy: bool) -> dict[str, Any]:
    """A decided experiment: event, audit, champion alone again, loser archived."""
    settings = get_settings()
    outcome = result["outcome"]
    payload = {"experiment": spec.to_dict(), "result": result}
    emit_event(
        EXPERIMENT_DECIDED,
        resource={"prefect.resource.id": f"readmit.experiment.{spec.id}",
                  "prefect.resource.name": spec.id, "readmit.outcome": outcome},
        payload=payload,
    )  # fmt: skip
    audit.append(settings.artifacts_uri, "experiment_decided", id=spec.id, tag=spec.challenger,
                 champion=spec.champion, outcome=outcome, n=result["n"],
                 estimate=result["estimate"], report=result.get("report"))  # fmt: skip
    deployed = roll_service(None) if redeploy else None
    state.end(settings.layout, spec, "decided", outcome)
    if outcome != "challenger_better":
        reason = f"experiment {spec.id}: {outcome} after {result['n']} outcomes"
        registry.set_stage(spec.challenger, "archived", reason=reason)
        audit.append(settings.artifacts_uri, "archived", tag=spec.challenger, reason=reason)
    get_run_logger().warning("emitted %s: %s %s", EXPERIMENT_DECIDED, spec.id, outcome)
    return {"deployment": deployed, **payload}


@flow(name="experiment", log_prints=True)
def experiment_flow(
    action: Action = "evaluate",
    challenger: str | None = None,
    mode: Mode = "shadow",
    canary_share: float = DEFAULT_CANARY_SHARE,
    started_by: str = "prefect-ui",
    reason: str = "manual",
    max_outcomes: int = sequential.DEFAULT_MAX_N,
    redeploy_service: bool = True,
) -> dict[str, Any]:
    """Start, judge or stop the live experiment.

    Args:
        action: `evaluate` (the daily schedule), `start` or `stop`.
        challenger: `start` only: the registered model tag to put beside the champion.
        mode: `start` only: `shadow` (both score, the champion answers) or `canary`.
        canary_share: `start` only: the share of patients the challenger answers in a canary.
        started_by: `start` only: who started it (the audit log says so).
        reason: `stop` only: why it is stopped.
        max_outcomes: `evaluate`: inconclusive after this many matured outcomes (one year).
        redeploy_service: roll the running service (start, stop, and after a decision).
    """
    if action == "start":
        if not challenger:
            raise ValueError("challenger: a registered model tag is required to start")
        return start(mode, challenger, canary_share, started_by, redeploy_service)
    if action == "stop":
        return stop(reason, redeploy_service)
    spec = state.current(get_settings().layout)
    if spec is None:
        get_run_logger().info("no experiment running: nothing to judge")
        return {"experiment": None}
    policy = sequential.SequentialPolicy(max_n=max_outcomes, min_n=min(500, max_outcomes))
    result = look(spec, policy)
    if result is None or result["outcome"] == "continue":
        return {"experiment": spec.to_dict(), "result": result}
    return conclude(spec, result, redeploy_service)


if __name__ == "__main__":
    experiment_flow()
