"""Promotion flow: a challenger that won its live experiment is promoted once a person approves.

Triggered by `readmit.experiment.decided` with outcome `challenger_better` (prefect.yaml), or run
by hand for a registered model. The reviewer sees champion against challenger (holdout metrics,
subgroups, calibration as registered, and the experiment's result) in the paused run's form
(`flows.approval`); the approval record, with the digest it approved, goes to the audit log and
into the registry record of the promotion. Then the service is redeployed. Not approved: the
challenger is archived with the reviewer's reason.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.approval import request_approval
from flows.retraining import redeploy
from readmit import storage
from readmit.model import approval, evaluate, gates, lifecycle, registry
from readmit.ops import audit
from readmit.settings import get_settings


def experiment_result(experiment_id: str | None) -> dict[str, Any] | None:
    """The stored decision of an experiment (None: no experiment, or it never decided)."""
    if not experiment_id:
        return None
    url = f"{get_settings().layout.experiment_dir(experiment_id)}/decision.json"
    if not storage.exists(url):
        return None
    return {**storage.read_json(url), "id": experiment_id}


def packet_for(challenger: str, experiment: dict[str, Any] | None) -> approval.ReviewPacket:
    """What the reviewer sees: both models as registered, and the experiment's result."""
    champion = registry.production_tag()
    challenger_meta = registry.model_metadata(challenger)
    champion_eval = (
        evaluate.Evaluation.from_metadata(registry.model_metadata(champion)) if champion else None
    )
    challenger_eval = evaluate.Evaluation.from_metadata(challenger_meta)
    won = experiment is not None and experiment.get("outcome") == "challenger_better"
    gate = gates.GateResult(
        promote=won or experiment is None,
        reasons=[
            f"live experiment: {experiment.get('outcome')}" if experiment else "no experiment"
        ],
        champion_auc=(champion_eval.metrics.get("roc_auc") if champion_eval else None),
        challenger_auc=challenger_eval.metrics.get("roc_auc"),
    )
    digests = (
        registry.model_digest(challenger),
        registry.model_digest(champion) if champion else None,
    )
    return approval.review_packet(
        challenger, champion, gate, challenger_eval, champion_eval, digests, experiment
    )


@flow(name="promotion", log_prints=True)
def promotion_flow(
    challenger: str, experiment_id: str | None = None, redeploy_service: bool = True
) -> dict[str, Any]:
    """Ask for approval, then promote `challenger` and redeploy (or archive it, not approved).

    Args:
        challenger: The registered model tag to promote.
        experiment_id: The experiment it won (its result is shown to the reviewer).
        redeploy_service: Redeploy the service after a promotion.
    """
    settings, logger = get_settings(), get_run_logger()
    experiment = experiment_result(experiment_id)
    packet = packet_for(challenger, experiment)
    champion = packet.champion
    if experiment is not None and experiment.get("outcome") != "challenger_better":
        raise ValueError(f"experiment {experiment_id} decided {experiment.get('outcome')}: "
                         f"{challenger} is not a candidate for promotion")  # fmt: skip
    record = request_approval(packet, settings)
    audit.append(settings.artifacts_uri, "approval", **record.audit_fields())
    proposed = lifecycle.Outcome("production", f"won experiment {experiment_id}" if experiment_id
                                 else "promoted by hand after approval", "promoted")  # fmt: skip
    outcome = approval.outcome_after_approval(proposed, record)
    gate = gates.GateResult(outcome.stage == "production", [outcome.reason])
    lifecycle.apply(challenger, outcome, gate, champion=champion,
                    artifacts_uri=settings.artifacts_uri, approval=record.to_dict())  # fmt: skip
    logger.info("%s %s: %s", outcome.audit, challenger, outcome.reason)
    registry.publish_to_store(challenger)
    lifecycle.retire(settings.model_retention, settings.artifacts_uri)
    out: dict[str, Any] = {"challenger": challenger, "champion": champion, "stage": outcome.stage,
                           "approval": record.to_dict()}  # fmt: skip
    if outcome.stage == "production" and redeploy_service:
        out["deployment"] = redeploy(challenger)
    return out
