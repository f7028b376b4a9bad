"""Lifecycle decisions: what happens to a registered model after the gate.

`decide_first` and `decide_challenger` are pure (gate result in, stage and audit decision out),
so every branch has a unit test; `apply` carries a decision out on the registry (atomic
promotion) and the audit log. The flows only call them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from readmit.model import registry
from readmit.model.gates import GateResult
from readmit.ops import audit

Stage = Literal["production", "candidate", "archived"]


@dataclass(frozen=True)
class Outcome:
    """Where a model goes, and what the audit log says about it (None: nothing to audit)."""

    stage: Stage
    reason: str
    audit: Literal["promoted", "rejected"] | None


def decide_first(gate: GateResult, *, has_production: bool, promote_if_passing: bool) -> Outcome:
    """A model from the training flow: production only if it passes the gate, nothing usable is
    in production (none, or one this version cannot load), and the run asked for it. Otherwise
    it waits as a candidate: a usable production model is only replaced through the challenger
    gate (retraining)."""
    reason = "; ".join(gate.reasons)
    if not gate.promote:
        return Outcome("candidate", f"gate failed: {reason}", None)
    if has_production:
        return Outcome(
            "candidate", "a production model exists: challengers go through retraining", None
        )
    if not promote_if_passing:
        return Outcome("candidate", "passed the gate; promotion not asked for", None)
    return Outcome("production", f"first model passing the gate: {reason}", "promoted")


def decide_challenger(gate: GateResult) -> Outcome:
    """A challenger from retraining: promoted if it passed the gate, else archived (kept, not
    served) with the gate's reasons."""
    reason = "; ".join(gate.reasons)
    if gate.promote:
        return Outcome("production", reason, "promoted")
    return Outcome("archived", reason, "rejected")


def apply(
    tag: str,
    outcome: Outcome,
    gate: GateResult,
    *,
    champion: str | None,
    artifacts_uri: str,
    approval: dict[str, Any] | None = None,
) -> None:
    """Carry out an outcome: atomic promotion (the previous model is archived) or the stage, then
    the audit line with the gate's figures (and, for a promotion, its approval record: who, why,
    and the digest approved, which the promotion checks against the model's).

    A rerun after a crash (the flow killed between promotion and audit line, or after both)
    completes what is missing and repeats nothing: the registry keeps one promotion record, and
    the audit log one line for it (the line names the record's id).
    """
    who: dict[str, Any] = {"champion": champion}  # a rejection names the champion that stays
    if outcome.stage == "production":
        record = registry.promote(tag, reason=outcome.reason, approval=approval)
        if record["event"] != "promoted" or _audited(artifacts_uri, record.get("id")):
            return  # put back by a rollback or import (audited there), or audited already
        # A promotion names the model it replaced, the registry record it audits, and the
        # digest of the signed files it put in production (`signing`).
        who = {
            "previous": champion,
            "registry_record": record.get("id"),
            "manifest_sha256": record.get("manifest_sha256"),
            "approved_by": (approval or {}).get("reviewer"),
        }
    elif outcome.stage == "archived":
        registry.set_stage(tag, "archived", reason=outcome.reason)
    if outcome.audit is not None:
        audit.append(
            artifacts_uri,
            outcome.audit,
            tag=tag,
            **who,
            reasons=gate.reasons,
            reason=outcome.reason,
            challenger_auc=gate.challenger_auc,
            champion_auc=gate.champion_auc,
        )


def audit_manual_promotion(record: dict[str, Any], artifacts_uri: str) -> None:
    """The audit line of a promotion by hand (`readmit models promote`), with the digest it put
    in production; once per registry record (a repeated command audits nothing new)."""
    if record["event"] != "promoted" or _audited(artifacts_uri, record.get("id")):
        return
    audit.append(
        artifacts_uri,
        "promoted",
        tag=record["tag"],
        previous=record.get("previous"),
        registry_record=record.get("id"),
        manifest_sha256=record.get("manifest_sha256"),
        reasons=[record.get("reason")],
        by="command line",
    )


def _audited(artifacts_uri: str, record_id: str | None) -> bool:
    """True if the audit log already has the line of this registry record."""
    if record_id is None:  # a record written before records had ids: cannot tell, audit it
        return False
    return any(r.get("registry_record") == record_id for r in audit.read(artifacts_uri))


def to_retire(models: Sequence[registry.ModelSummary], keep: int, protected: set[str]) -> list[str]:
    """Models past the retention count: beyond the newest `keep` (newest first, as
    `registry.list_models` gives them), never a protected one (production, the rollback target),
    and not archived already."""
    kept, out = 0, []
    for model in models:
        if model.tag in protected:
            continue
        if kept < keep:
            kept += 1
        elif model.stage != "archived":
            out.append(model.tag)
    return out


def retire(keep: int, artifacts_uri: str) -> list[str]:
    """Archive the models past the retention count, each exported to the artifact store first
    (archived, never lost: `readmit models` can still show, sign or promote it), and audited."""
    state = registry.read_state()
    protected = {t for t in (state.production, registry.previous_production(state)) if t}
    retired = to_retire(registry.list_models(), keep, protected)
    reason = f"retention: older than the newest {keep} models"
    for tag in retired:
        exported = registry.publish_to_store(tag)
        registry.set_stage(tag, "archived", reason=reason)
        audit.append(artifacts_uri, "archived", tag=tag, reason=reason, exported=exported)
    return retired
