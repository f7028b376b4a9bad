"""Retraining flow: a challenger trained on the cumulative labelled data is gated against the
champion on the same recent, patient-disjoint holdout; a winner is promoted atomically and
redeployed. Triggered by `readmit.drift.detected` (see prefect.yaml) or run by hand.
"""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.training import assess, fit, write_reference
from readmit import data
from readmit.data import inbox
from readmit.model import evaluate, gates, lineage, registry, retraining
from readmit.ops import audit
from readmit.settings import get_settings


@task(cache_policy=NO_CACHE)
def gather(champion: registry.LoadedModel | None, recent_batches: int) -> retraining.RetrainingData:
    """Champion's training cohort + every labelled batch -> challenger data and fair holdout."""
    settings = get_settings()
    meta = champion.metadata if champion else {}
    uri = (meta.get("data") or {}).get("uri") or settings.data_uri
    expected = settings.data_sha256 if uri == settings.data_uri else None
    frame = data.read_encounters(uri, expected).frame
    base = retraining.champion_training_rows(
        frame,
        meta.get("training_window", "reference"),
        settings.reference_fraction,
        meta.get("holdout_fraction", 0.2),
        settings.seed,
    )
    batch_ids = inbox.labelled_batches(settings.artifacts_uri)
    labelled = [inbox.load_labelled(settings.artifacts_uri, b) for b in batch_ids]
    assembled = retraining.assemble(
        base, labelled, recent_batches=recent_batches, seed=settings.seed
    )
    get_run_logger().info(
        "challenger data: %d encounters (%d labelled batches); holdout %d recent encounters "
        "of unseen patients",
        len(assembled.train),
        len(batch_ids),
        len(assembled.holdout),
    )
    return assembled


@task(cache_policy=NO_CACHE)
def decide(champion_eval: Any, challenger_eval: Any) -> gates.GateResult:
    """The challenger gate, with the floor taken from settings."""
    settings = get_settings()
    policy = gates.GatePolicy(
        champion_floor=settings.min_roc_auc, subgroup_min_size=settings.subgroup_min_size
    )
    champion = champion_eval.to_dict() if champion_eval is not None else None
    return gates.challenger_gate(champion, challenger_eval.to_dict(), policy)


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
    label: Literal["<30", "any"] = "<30",
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
    settings, logger = get_settings(), get_run_logger()
    audit.append(
        settings.artifacts_uri, "retrain_started", reason=reason, drift_event_id=drift_event_id
    )
    try:
        champion = registry.load_model()
    except registry.NoModelError:
        champion = None
    assembled = gather(champion, recent_batches)
    result = fit(assembled.train, label, settings.seed, search_budget_s)
    challenger_eval = assess(result, assembled.holdout, label)["model"]
    champion_eval = (
        evaluate.evaluate_model(
            champion.model, assembled.holdout, label=label, threshold=champion.metadata["threshold"]
        )
        if champion
        else None
    )
    decision = decide(champion_eval, challenger_eval)
    version = registry.new_version()
    profile_uri, _ = write_reference(
        assembled.train_feed, assembled.holdout_feed, result.model, label, version
    )
    summary = {
        "data": {
            "uri": "cumulative",
            "sha256": None,
            **lineage.summarize_encounters(assembled.train),
            "labelled_batches": assembled.n_labelled_batches,
            "holdout_rows": len(assembled.holdout),
        },
        "validation": {"success": True, "n_rows": len(assembled.train), "n_expectations": 0},
        "label_definition": label,
    }
    metadata = lineage.model_metadata(
        summary=summary,
        result=result,
        evaluations={"model": challenger_eval, "baseline": challenger_eval},
        profile_uri=profile_uri,
        timings={},
        window="cumulative",
    )
    metadata |= {
        "gate": decision.to_dict(),
        "champion": champion.tag if champion else None,
        "retraining_reason": reason,
    }
    tag = registry.save_model(result.model, metadata, version=version)
    out: dict[str, Any] = {
        "challenger": tag,
        "champion": champion.tag if champion else None,
        **decision.to_dict(),
    }
    create_table_artifact(
        key="challenger-vs-champion",
        table=[
            {"model": f"champion {out['champion']}", "roc_auc": decision.champion_auc},
            {"model": f"challenger {tag}", "roc_auc": decision.challenger_auc},
        ],
        description="Same recent, patient-disjoint holdout",
    )
    if decision.promote:
        registry.promote(tag, reason="; ".join(decision.reasons))
        audit.append(
            settings.artifacts_uri,
            "promoted",
            tag=tag,
            previous=out["champion"],
            reasons=decision.reasons,
            challenger_auc=decision.challenger_auc,
            champion_auc=decision.champion_auc,
        )
        logger.info("promoted %s: %s", tag, "; ".join(decision.reasons))
        if redeploy_service:
            out["deployment"] = redeploy(tag)
    else:
        registry.set_stage(tag, "archived", reason="; ".join(decision.reasons))
        audit.append(
            settings.artifacts_uri,
            "rejected",
            tag=tag,
            champion=out["champion"],
            reasons=decision.reasons,
            challenger_auc=decision.challenger_auc,
            champion_auc=decision.champion_auc,
        )
        logger.warning("rejected %s: %s", tag, "; ".join(decision.reasons))
    registry.publish_to_store(tag)
    create_markdown_artifact(
        key="audit-log",
        markdown=audit.as_markdown(audit.read(settings.artifacts_uri, last=20)),
        description="Latest lifecycle decisions",
    )
    return out


if __name__ == "__main__":
    retraining_flow()
