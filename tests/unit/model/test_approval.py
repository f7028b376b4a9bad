"""Approval of a promotion: the policy, what the reviewer sees, the record, and that nothing but
an approval lets a challenger through."""

from __future__ import annotations

from typing import Any

import pytest

from readmit.model import approval
from readmit.model.gates import GateResult
from readmit.model.lifecycle import Outcome


class _Eval:
    """The two methods of `evaluate.Evaluation` the packet reads."""

    def __init__(self, auc: float) -> None:
        self.calibration = {"ece": 0.01}
        self._auc = auc

    def headline(self) -> dict[str, float]:
        return {"roc_auc": self._auc, "brier": 0.09, "ece": 0.01}

    def subgroup_rows(self) -> list[dict[str, Any]]:
        return [
            {"attribute": "age", "group": "[80-90)", "n": 410, "roc_auc": 0.61},
            {"attribute": "race", "group": "Asian", "n": 90, "roc_auc": None},
        ]


GATE = GateResult(True, ["challenger AUC 0.690 >= champion 0.680"], [], 0.68, 0.69)
PROMOTE = Outcome("production", "passed", "promoted")


def _packet(digest: str | None = "d" * 64) -> approval.ReviewPacket:
    return approval.review_packet(
        "readmission:new", "readmission:old", GATE, _Eval(0.69), _Eval(0.68), (digest, "c" * 64)
    )


def test_production_requires_a_person_and_development_approves_by_policy() -> None:
    assert approval.approval_mode(None, "production") == "required"
    assert approval.approval_mode(None, "development") == "auto"
    assert approval.approval_mode("required", "development") == "required"
    with pytest.raises(approval.ApprovalError, match="READMIT_APPROVAL='yes'"):
        approval.approval_mode("yes", "production")


def test_the_packet_shows_both_models_subgroups_and_its_own_digest() -> None:
    packet = _packet()
    text = packet.as_markdown()
    assert "readmission:new" in text and "readmission:old" in text
    assert "| roc_auc | 0.6800 | 0.6900 |" in text
    assert "age=[80-90)" in text and "No live experiment" in text
    assert packet.sha256()[:16] in text
    experiment = {"mode": "shadow", "decision": "challenger_better", "n": 4200,
                  "metric": "log_loss", "estimate": 0.002, "cs_lower": 0.0004,
                  "cs_upper": 0.0036}  # fmt: skip
    shown = approval.review_packet(
        "readmission:new", None, GATE, _Eval(0.69), None, (None, None), experiment
    )
    assert "challenger_better" in shown.as_markdown() and shown.sha256() != packet.sha256()


def test_a_review_needs_a_reviewer_and_a_real_rationale() -> None:
    packet = _packet()
    with pytest.raises(approval.ApprovalError, match="reviewer"):
        approval.reviewed(packet, "approve", "  ", "because it is better", "required")
    with pytest.raises(approval.ApprovalError, match="rationale"):
        approval.reviewed(packet, "approve", "Dr. Ada", "ok", "required")
    with pytest.raises(approval.ApprovalError, match="decision"):
        approval.reviewed(packet, "maybe", "Dr. Ada", "because it is better", "required")


def test_an_approval_names_the_digest_and_what_was_seen_and_lets_the_promotion_through() -> None:
    packet = _packet()
    record = approval.reviewed(
        packet, "approve", " Dr. Ada ", "better calibrated in 80+", "required"
    )
    assert record.approved and record.reviewer == "Dr. Ada" and record.via == "prefect-ui"
    assert record.approved_digest == "d" * 64 and record.packet_sha256 == packet.sha256()
    assert approval.outcome_after_approval(PROMOTE, record) == PROMOTE


def test_a_rejection_or_a_timeout_archives_the_challenger_with_the_reason() -> None:
    packet = _packet()
    rejected = approval.reviewed(packet, "reject", "Dr. Ada", "subgroup 80+ is worse", "required")
    outcome = approval.outcome_after_approval(PROMOTE, rejected)
    assert outcome.stage == "archived" and outcome.audit == "rejected"
    assert "Dr. Ada" in outcome.reason and "subgroup 80+ is worse" in outcome.reason
    assert rejected.approved_digest is None
    late = approval.timed_out(packet, 3600)
    assert not late.approved and late.via == "timeout"
    assert approval.outcome_after_approval(PROMOTE, late).stage == "archived"


def test_the_auto_policy_approves_and_says_so() -> None:
    record = approval.auto_approved(_packet(), "development")
    assert record.approved and record.via == "policy" and record.reviewer == "policy:auto"
    assert "READMIT_APPROVAL=auto" in record.rationale
    archived = Outcome("archived", "gate failed", "rejected")  # approval never revives a loser
    assert approval.outcome_after_approval(archived, record) == archived


def test_the_approval_goes_to_the_audit_log_as_one_line(tmp_path) -> None:
    from readmit.ops import audit

    record = approval.reviewed(_packet(), "reject", "Dr. Ada", "subgroup 80+ is worse", "required")
    audit.append(str(tmp_path), "approval", **record.audit_fields())
    (line,) = audit.read(str(tmp_path))
    assert line["decision"] == "approval" and line["outcome"] == "rejected"
    assert line["tag"] == "readmission:new" and line["reviewer"] == "Dr. Ada"
    assert line["packet_sha256"] == _packet().sha256()
