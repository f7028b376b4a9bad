"""Retraining flow: a challenger trained on the cumulative labelled data is gated against the
champion on the same recent, patient-disjoint holdout; a winner is promoted atomically, once
approved (`flows.approval`: a person in the Prefect UI, or the `auto` policy outside production),
and redeployed. Triggered by `readmit.drift.detected` (see prefect.yaml) or run by hand.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.approval import request_approval
from flows.tasks import assess, fit, write_reference
from readmit import data
from readmit.data import inbox, outcomes
from readmit.model import approval, evaluate, gates, lifecycle, lineage, registry, retraining
from readmit.monitoring import served as served_log
from readmit.ops import audit
from readmit.schema import LabelDefinition
from readmit.serving import prediction_log_uri
from readmit.settings import get_settings


@task(cache_policy=NO_CACHE)
def gather(base: dict[str, Any], recent_batches: int) -> retraining.RetrainingData:
    """The chain's base training cohort + every labelled batch and matured served window ->
    challenger data and fair holdout."""
    settings = get_settings()
    uri = base["uri"]
    expected = settings.data_sha256 if uri == settings.data_uri else None
    frame = data.read_encounters(uri, expected).frame
    base_rows = retraining.champion_training_rows(
        frame,
        base["training_window"],
        settings.reference_fraction,
        base["holdout_fraction"],
        settings.seed,
    )
    batch_ids = inbox.labelled_batches(settings.artifacts_uri)
    labelled = [inbox.load_labelled(settings.artifacts_uri, b) for b in batch_ids]
    served = production_batches()
    assembled = retraining.assemble(
        base_rows,
        labelled + served,
        key=settings.pseudonym_key_bytes,
        recent_batches=recent_batches,
        seed=settings.seed,
    )
    get_run_logger().info(
        "challenger data: %d encounters (%d labelled inbox batches, %d served encounters with "
        "matured outcomes in %d windows); holdout %d recent encounters of unseen patients",
        len(assembled.train), len(batch_ids), sum(len(b) for b in served), len(served),
        len(assembled.holdout),
    )  # fmt: skip
    return assembled


def production_batches() -> list[Any]:
    """Served encounters whose outcomes matured, per monitoring window (prediction log joined
    to the outcomes feed); unreadable log chunks are set aside, never fatal."""
    settings = get_settings()
    chunks = served_log.list_chunks(prediction_log_uri(settings))
    good, _ = served_log.read_chunks(chunks, settings.layout.bad_chunks_dir())
    if not good:
        return []
    frame = pd.concat([rows for _, rows in good], ignore_index=True)
    window = timedelta(seconds=settings.monitor_window_seconds)
    return retraining.production_batches(
        frame, outcomes.read_received(settings.artifacts_uri), window
    )


@task(cache_policy=NO_CACHE)
def load_champion() -> registry.LoadedModel | None:
    """The production model (None: nothing in production yet)."""
    try:
        return registry.load_model()
    except registry.NoModelError:
        return None


@task(cache_policy=NO_CACHE)
def assess_champion(
    champion: registry.LoadedModel | None, holdout: Any, label: LabelDefinition
) -> evaluate.Evaluation | None:
    """The champion on the challenger's holdout, at its own threshold (served path)."""
    if champion is None:
        return None
    threshold = float(champion.metadata["threshold"])
    return evaluate.evaluate_model(champion.model, holdout, label=label, threshold=threshold)


@task(cache_policy=NO_CACHE)
def register_challenger(
    result: Any,
    evaluations: dict[str, Any],
    decision: gates.GateResult,
    assembled: retraining.RetrainingData,
    context: dict[str, Any],
) -> str:
    """Save the challenger with its lineage: only what this run did and read."""
    summary = {
        "data": {
            "uri": "cumulative",
            "sha256": None,
            **lineage.summarize_encounters(assembled.train),
            "labelled_batches": assembled.n_labelled_batches,
            "holdout_rows": len(assembled.holdout),
        },
        "validation": retraining.INPUT_VALIDATION,
        "label_definition": context["label"],
    }
    metadata = lineage.model_metadata(
        summary=summary,
        result=result,
        evaluations=evaluations,
        profile_uri=context["profile_uri"],
        timings={},
        window="cumulative",
    )
    metadata |= {
        "base": context["base"],  # what the next retraining starts from (`training_base`)
        "gate": decision.to_dict(),
        "champion": context["champion"],
        "retraining_reason": context["reason"],
    }
    return registry.save_model(result.model, metadata, version=context["version"])


@task(cache_policy=NO_CACHE)
def settle(
    tag: str,
    outcome: lifecycle.Outcome,
    decision: gates.GateResult,
    champion: str | None,
    approved: approval.ApprovalRecord | None,
) -> lifecycle.Outcome:
    """Promote or archive the challenger, with its audit line (`lifecycle`)."""
    settings = get_settings()
    record = approved.to_dict() if approved else None
    lifecycle.apply(tag, outcome, decision, champion=champion,
                    artifacts_uri=settings.artifacts_uri, approval=record)  # fmt: skip
    level = "info" if outcome.stage == "production" else "warning"
    getattr(get_run_logger(), level)("%s %s: %s", outcome.audit, tag, outcome.reason)
    registry.publish_to_store(tag)
    return outcome


def approve(
    tag: str,
    champion: str | None,
    decision: gates.GateResult,
    evaluations: dict[str, Any],
    champion_eval: evaluate.Evaluation | None,
) -> approval.ApprovalRecord:
    """A challenger that passed the gate is promoted only once approved (`flows.approval`):
    the record goes to the audit log whatever it says."""
    settings = get_settings()
    digests = (registry.model_digest(tag), registry.model_digest(champion) if champion else None)
    packet = approval.review_packet(
        tag, champion, decision, evaluations["model"], champion_eval, digests
    )
    record = request_approval(packet, settings)
    audit.append(settings.artifacts_uri, "approval", **record.audit_fields())
    return record


def publish_decision(tag: str, champion: str | None, decision: gates.GateResult) -> None:
    """Prefect artifacts: challenger against champion, and the latest lifecycle decisions."""
    create_table_artifact(
        key="challenger-vs-champion",
        table=[
            {"model": f"champion {champion}", "roc_auc": decision.champion_auc},
            {"model": f"challenger {tag}", "roc_auc": decision.challenger_auc},
        ],
        description="Same recent, patient-disjoint holdout, scored as served",
    )
    create_markdown_artifact(
        key="audit-log",
        markdown=audit.as_markdown(audit.read(get_settings().artifacts_uri, last=20)),
        description="Latest lifecycle decisions",
    )


def redeploy(tag: str) -> dict[str, Any] | None:
    """Roll a running service to the new production model through the deployment flow; its
    summary (url, pid, replaced pid, curl, ...).

    Where no service was deployed from this machine, there is nothing to roll: say so, None.
    """
    from flows.deployment import deployment_flow
    from readmit.ops import deploy

    if deploy.running_server() is None:
        get_run_logger().info("no running service to redeploy; `make run` or flows/deployment.py")
        return None
    return deployment_flow(model_tag=tag)


@flow(name="retraining", log_prints=True)
def retraining_flow(
    reason: str = "manual",
    drift_event_id: str | None = None,
    label: LabelDefinition = "<30",
    search_budget_s: float = 60.0,
    recent_batches: int = 2,
    redeploy_service: bool = True,
) -> dict[str, Any]:
    """Train a challenger, gate it against the champion, promote and redeploy if it wins.

    Args:
        reason: Why retraining runs (the trigger fills it from the drift event).
        drift_event_id: The Prefect event that triggered this run, for the audit trail.
        label: Label definition of the challenger ("<30" or "any").
        search_budget_s: Hyperparameter search budget of the challenger.
        recent_batches: How many of the latest labelled batches the holdout is drawn from.
        redeploy_service: Redeploy the service after a promotion.
    """
    settings = get_settings()
    audit.append(
        settings.artifacts_uri, "retrain_started", reason=reason, drift_event_id=drift_event_id
    )
    champion = load_champion()
    champion_tag = champion.tag if champion else None
    base = retraining.training_base(champion.metadata if champion else {}, settings.data_uri)
    assembled = gather(base, recent_batches)
    result = fit(assembled.train, label, settings.seed, search_budget_s)
    evaluations = assess(result, assembled.holdout, label)
    champion_eval = assess_champion(champion, assembled.holdout, label)
    policy = gates.GatePolicy.from_settings(settings)
    decision = gates.gate(evaluations["model"], champion_eval, policy)
    version = registry.new_version()
    profile_uri, _ = write_reference(
        assembled.train_feed, assembled.holdout_feed, result.model, label, version
    )
    context = {
        "label": label,
        "profile_uri": profile_uri,
        "champion": champion_tag,
        "reason": reason,
        "version": version,
        "base": base,
    }
    tag = register_challenger(result, evaluations, decision, assembled, context)
    outcome = lifecycle.decide_challenger(decision)
    approved = None
    if outcome.stage == "production":
        approved = approve(tag, champion_tag, decision, evaluations, champion_eval)
        outcome = approval.outcome_after_approval(outcome, approved)
    outcome = settle(tag, outcome, decision, champion_tag, approved)
    lifecycle.retire(settings.model_retention, settings.artifacts_uri)
    publish_decision(tag, champion_tag, decision)
    out: dict[str, Any] = {"challenger": tag, "champion": champion_tag, **decision.to_dict()}
    if outcome.stage == "production" and redeploy_service:
        out["deployment"] = redeploy(tag)
    return out


if __name__ == "__main__":
    retraining_flow()
