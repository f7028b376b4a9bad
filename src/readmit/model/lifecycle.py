"""Lifecycle decisions: what happens to a registered model after the gate.

`decide_first` and `decide_challenger` are pure (gate result in, stage and audit decision out),
so every branch has a unit test; `apply` carries a decision out on the registry (atomic
promotion) and the audit log. The flows only call them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
    tag: str, outcome: Outcome, gate: GateResult, *, champion: str | None, artifacts_uri: str
) -> None:
    """Carry out an outcome: atomic promotion (the previous model is archived) or the stage, then
    the audit line with the gate's figures."""
    if outcome.stage == "production":
        registry.promote(tag, reason=outcome.reason)
    elif outcome.stage == "archived":
        registry.set_stage(tag, "archived", reason=outcome.reason)
    if outcome.audit is not None:
        # A promotion names the model it replaced; a rejection, the champion that stays.
        who = {"previous": champion} if outcome.audit == "promoted" else {"champion": champion}
        audit.append(
            artifacts_uri,
            outcome.audit,
            tag=tag,
            **who,
            reasons=gate.reasons,
            challenger_auc=gate.challenger_auc,
            champion_auc=gate.champion_auc,
        )
