"""Challenger vs champion: the promotion gate of the retraining flow.

Both models are scored on the SAME recent, patient-disjoint holdout, so the comparison is fair.
A challenger is promoted if it is better by a margin, or if the champion has fallen below its
floor (a broken champion should not be protected by the margin), and in both cases only if no
subgroup gets worse by more than a tolerance and calibration stays within bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the challenger gate (defaults are deliberately conservative)."""

    min_improvement: float = 0.005  # ROC AUC the challenger must gain over the champion
    champion_floor: float = 0.62  # below this the champion is replaced by any sound challenger
    subgroup_tolerance: float = 0.03  # max ROC AUC a subgroup may lose
    subgroup_min_size: int = 200  # smaller subgroups are too noisy to gate on
    max_ece: float = 0.05  # calibration bound (expected calibration error)


@dataclass(frozen=True)
class GateResult:
    """Outcome of the gate with every reason, for the audit log and the Prefect artifact."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    champion_auc: float | None = None
    challenger_auc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def _subgroup_auc(rows: list[dict[str, Any]], min_size: int) -> dict[tuple[str, str], float]:
    return {
        (str(r["attribute"]), str(r["group"])): float(r["roc_auc"])
        for r in rows
        if r.get("roc_auc") is not None and int(r.get("n", 0)) >= min_size
    }


def subgroup_regressions(
    champion: list[dict[str, Any]], challenger: list[dict[str, Any]], policy: GatePolicy
) -> list[str]:
    """Subgroups (present in both, large enough) where the challenger loses too much AUC."""
    before = _subgroup_auc(champion, policy.subgroup_min_size)
    after = _subgroup_auc(challenger, policy.subgroup_min_size)
    return [
        f"{attr}={group}: ROC AUC {before[(attr, group)]:.3f} -> {after[(attr, group)]:.3f}"
        for (attr, group) in sorted(before.keys() & after.keys())
        if before[(attr, group)] - after[(attr, group)] > policy.subgroup_tolerance
    ]


def challenger_gate(
    champion: dict[str, Any] | None, challenger: dict[str, Any], policy: GatePolicy
) -> GateResult:
    """Decide promotion from two evaluations on the same holdout (`metrics` + `subgroups`).

    With no champion (first model), only the calibration bound and the floor apply.
    """
    new_auc = float(challenger["metrics"]["roc_auc"])
    reasons: list[str] = []
    ok = True
    if challenger["metrics"].get("ece", 0.0) > policy.max_ece:
        ok = False
        reasons.append(f"challenger ECE {challenger['metrics']['ece']:.3f} > {policy.max_ece}")
    if champion is None:
        if new_auc < policy.champion_floor:
            ok = False
            reasons.append(f"challenger ROC AUC {new_auc:.3f} below floor {policy.champion_floor}")
        reasons.append("no champion: first production model")
        return GateResult(ok, reasons, None, new_auc)
    old_auc = float(champion["metrics"]["roc_auc"])
    gain = new_auc - old_auc
    if old_auc < policy.champion_floor and new_auc >= old_auc:
        reasons.append(f"champion ROC AUC {old_auc:.3f} fell below floor {policy.champion_floor}")
    elif gain >= policy.min_improvement:
        reasons.append(f"challenger beats champion by {gain:+.4f} ROC AUC")
    else:
        ok = False
        reasons.append(f"gain {gain:+.4f} ROC AUC is below the margin {policy.min_improvement}")
    regressions = subgroup_regressions(champion["subgroups"], challenger["subgroups"], policy)
    if regressions:
        ok = False
        reasons.append("subgroups worse beyond tolerance: " + "; ".join(regressions))
    return GateResult(ok, reasons, old_auc, new_auc)
