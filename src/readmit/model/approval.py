"""Human approval of a promotion: what the reviewer is shown, the policy, and the record.

A challenger that passed the gate is promoted only once approved. The retraining flow pauses
and asks, in the Prefect UI, for a decision, a reviewer and a rationale (flows/retraining.py);
this module holds everything about that decision that is not Prefect:

* `ReviewPacket`: champion against challenger as the reviewer sees it (headline metrics,
  subgroups, calibration, the gate, the live experiment's result when there is one, and the
  digests of both models), with a sha256 of exactly what was shown;
* the policy (`approval_mode`): `required` waits for a person, `auto` approves and says so in
  the record; production defaults to `required`, development to `auto`;
* `ApprovalRecord`: who, when, why, what they saw and which model digest they approved. It goes
  to the audit log and into the registry record of the promotion (the model's lineage);
* `outcome_after_approval`: a challenger not approved (rejected, or nobody answered before the
  timeout) is archived with that reason, never promoted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from readmit.model.gates import GateResult
from readmit.model.lifecycle import Outcome

ApprovalMode = Literal["required", "auto"]
Decision = Literal["approved", "rejected", "timed_out"]
Via = Literal["prefect-ui", "policy", "timeout"]
MIN_RATIONALE = 10
"""Shortest rationale a reviewer may give (characters, after trimming): a reason, not 'ok'."""
HEADLINE = ("roc_auc", "pr_auc", "brier", "log_loss", "ece", "mean_predicted", "prevalence")


class ApprovalError(ValueError):
    """A review that cannot be recorded: no reviewer, no rationale, an unknown decision."""


def approval_mode(configured: str | None, env: str) -> ApprovalMode:
    """The policy in force: the configured one, else `required` in production and `auto`
    elsewhere (so `make run` needs nobody at the keyboard)."""
    if configured in ("required", "auto"):
        return configured  # type: ignore[return-value]
    if configured is not None:
        raise ApprovalError(f"READMIT_APPROVAL={configured!r}: expected 'required' or 'auto'")
    return "required" if env == "production" else "auto"


@dataclass(frozen=True)
class ReviewPacket:
    """Champion against challenger, as shown to the reviewer (JSON-ready)."""

    challenger: str
    champion: str | None
    challenger_digest: str | None
    champion_digest: str | None
    gate: dict[str, Any]
    challenger_metrics: dict[str, Any]
    champion_metrics: dict[str, Any] | None
    subgroups: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    experiment: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    def sha256(self) -> str:
        """Digest of exactly what was shown: the record proves what the reviewer saw."""
        body = json.dumps(self.to_dict(), sort_keys=True, default=str).encode()
        return hashlib.sha256(body).hexdigest()

    def as_markdown(self) -> str:
        """The form's description in the Prefect UI: the comparison, then what to decide."""
        lines = [
            f"## Promote `{self.challenger}`?",
            f"Champion: `{self.champion or 'none'}`. Gate: "
            f"{'passed' if self.gate.get('promote') else 'failed'} "
            f"({'; '.join(self.gate.get('reasons') or [])}).",
            "",
            "| metric | champion | challenger |",
            "| --- | --- | --- |",
        ]
        champion = self.champion_metrics or {}
        for key in HEADLINE:
            if key in self.challenger_metrics:
                lines.append(
                    f"| {key} | {_fmt(champion.get(key))} | {_fmt(self.challenger_metrics[key])} |"
                )
        lines += _subgroup_lines(self.subgroups) + _experiment_lines(self.experiment)
        lines += [
            "",
            f"Challenger digest `{self.challenger_digest or 'unsigned'}`; "
            f"what you see has sha256 `{self.sha256()[:16]}`.",
            "Approve or reject, and say why (the rationale is required; it goes to the audit log).",
        ]
        return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("-" if value is None else str(value))


def _subgroup_lines(subgroups: list[dict[str, Any]], worst: int = 5) -> list[str]:
    """The challenger's weakest subgroups by ROC AUC (where the gate looks first)."""
    rated = [s for s in subgroups if isinstance(s.get("roc_auc"), float)]
    if not rated:
        return []
    lines = [
        "",
        "Weakest subgroups (challenger):",
        "",
        "| group | n | roc_auc |",
        "| --- | --- | --- |",
    ]
    for s in sorted(rated, key=lambda s: s["roc_auc"])[:worst]:
        lines.append(
            f"| {s.get('attribute')}={s.get('group')} | {s.get('n')} | {s['roc_auc']:.4f} |"
        )
    return lines


def _experiment_lines(experiment: dict[str, Any] | None) -> list[str]:
    """The live experiment's decision, when one ran."""
    if not experiment:
        return ["", "No live experiment ran for this challenger (offline holdout only)."]
    return [
        "",
        f"Live experiment ({experiment.get('mode')}): **{experiment.get('decision')}** after "
        f"{experiment.get('n')} matured outcomes; {experiment.get('metric')} difference "
        f"{_fmt(experiment.get('estimate'))} "
        f"[{_fmt(experiment.get('cs_lower'))}, {_fmt(experiment.get('cs_upper'))}].",
    ]


def review_packet(
    challenger: str,
    champion: str | None,
    gate: GateResult,
    challenger_eval: Any,
    champion_eval: Any | None,
    digests: tuple[str | None, str | None] = (None, None),
    experiment: dict[str, Any] | None = None,
) -> ReviewPacket:
    """Build the packet from the evaluations the gate used (`evaluate.Evaluation`)."""
    return ReviewPacket(
        challenger=challenger,
        champion=champion,
        challenger_digest=digests[0],
        champion_digest=digests[1],
        gate=gate.to_dict(),
        challenger_metrics=challenger_eval.headline(),
        champion_metrics=champion_eval.headline() if champion_eval is not None else None,
        subgroups=challenger_eval.subgroup_rows(),
        calibration=dict(challenger_eval.calibration),
        experiment=experiment,
    )


@dataclass(frozen=True)
class ApprovalRecord:
    """Who decided, when, why, through what, having seen what, about which exact model."""

    decision: Decision
    reviewer: str
    rationale: str
    via: Via
    decided_at: str
    challenger: str
    approved_digest: str | None
    packet_sha256: str
    policy: ApprovalMode

    @property
    def approved(self) -> bool:
        """True only for an explicit or policy approval."""
        return self.decision == "approved"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (audit log, registry record)."""
        return asdict(self)

    def audit_fields(self) -> dict[str, Any]:
        """The audit line's details (`ops.audit.append(uri, "approval", **fields)`): the
        record, its decision as `outcome` (the line's own `decision` is "approval") and the
        challenger as `tag`, as every lifecycle line names its model."""
        fields = self.to_dict()
        fields["outcome"] = fields.pop("decision")
        fields["tag"] = fields.pop("challenger")
        return fields


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def reviewed(
    packet: ReviewPacket, decision: str, reviewer: str, rationale: str, policy: ApprovalMode
) -> ApprovalRecord:
    """A person's answer in the UI. Raises ApprovalError naming what is missing."""
    if decision not in ("approve", "reject"):
        raise ApprovalError(f"decision {decision!r}: expected 'approve' or 'reject'")
    if not reviewer.strip():
        raise ApprovalError("reviewer: a name is required")
    if len(rationale.strip()) < MIN_RATIONALE:
        raise ApprovalError(f"rationale: at least {MIN_RATIONALE} characters are required")
    approved = decision == "approve"
    return ApprovalRecord(
        decision="approved" if approved else "rejected",
        reviewer=reviewer.strip(),
        rationale=rationale.strip(),
        via="prefect-ui",
        decided_at=_now(),
        challenger=packet.challenger,
        approved_digest=packet.challenger_digest if approved else None,
        packet_sha256=packet.sha256(),
        policy=policy,
    )


def auto_approved(packet: ReviewPacket, env: str) -> ApprovalRecord:
    """The `auto` policy's approval, recorded as such (nobody looked)."""
    return ApprovalRecord(
        decision="approved",
        reviewer="policy:auto",
        rationale=f"auto-approved by the approval policy (READMIT_APPROVAL=auto, env {env})",
        via="policy",
        decided_at=_now(),
        challenger=packet.challenger,
        approved_digest=packet.challenger_digest,
        packet_sha256=packet.sha256(),
        policy="auto",
    )


def timed_out(packet: ReviewPacket, timeout_s: float) -> ApprovalRecord:
    """Nobody answered in time: not approved."""
    return ApprovalRecord(
        decision="timed_out",
        reviewer="nobody",
        rationale=f"no decision within {timeout_s:.0f} s: the challenger is not promoted",
        via="timeout",
        decided_at=_now(),
        challenger=packet.challenger,
        approved_digest=None,
        packet_sha256=packet.sha256(),
        policy="required",
    )


def outcome_after_approval(outcome: Outcome, record: ApprovalRecord) -> Outcome:
    """A promotion goes ahead only when approved; otherwise the challenger is archived with the
    reviewer's reason (a rejection in the audit log)."""
    if outcome.stage != "production" or record.approved:
        return outcome
    reason = f"not approved ({record.decision} by {record.reviewer}): {record.rationale}"
    return Outcome("archived", reason, "rejected")
