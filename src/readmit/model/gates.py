"""The promotion gate, the one rule for every model that could reach production.

A candidate (the first model, or a challenger) is judged on its served-path holdout evaluation:

* **floor**: its ROC AUC is at least `min_roc_auc`;
* **calibration**: its ECE is at most `max_ece`;
* **subgroups**: no subgroup large enough to judge is credibly more than `max_subgroup_auc_gap`
  below the candidate's overall ROC AUC: the gap minus 1.96 Hanley-McNeil standard errors still
  exceeds the limit. A small group's AUC moves by 0.1 from sampling noise alone, and a gate that
  fails on noise teaches people to ignore it;
* **against the champion** (challengers only, both scored on the SAME recent patient-disjoint
  holdout): better by `min_improvement`, or the champion has fallen below the floor and the
  challenger is no worse (a broken champion is not protected by the margin; the floor then
  does not block the challenger either).

`GatePolicy.from_settings` builds the policy: the floor, the subgroup gap and the subgroup size
come from `Settings`, so one environment variable changes the gate everywhere.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from readmit.model.evaluate import Evaluation
from readmit.settings import Settings


@dataclass(frozen=True)
class GatePolicy:
    """Thresholds of the gate (defaults are deliberately conservative)."""

    min_roc_auc: float = 0.62
    max_subgroup_auc_gap: float = 0.08
    subgroup_min_size: int = 200
    min_improvement: float = 0.005
    max_ece: float = 0.05

    @classmethod
    def from_settings(cls, settings: Settings) -> GatePolicy:
        """The policy in force: `READMIT_MIN_ROC_AUC`, `READMIT_MAX_SUBGROUP_AUC_GAP`,
        `READMIT_SUBGROUP_MIN_SIZE`."""
        return cls(
            min_roc_auc=settings.min_roc_auc,
            max_subgroup_auc_gap=settings.max_subgroup_auc_gap,
            subgroup_min_size=settings.subgroup_min_size,
        )


@dataclass(frozen=True)
class GateResult:
    """Outcome of the gate with every reason and every check, for the audit log, the model's
    lineage and the Prefect artifact."""

    promote: bool
    reasons: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    champion_auc: float | None = None
    challenger_auc: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


def auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982) standard error of a ROC AUC: how noisy a subgroup's AUC is."""
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (
        auc * (1 - auc) + (positives - 1) * (q1 - auc**2) + (negatives - 1) * (q2 - auc**2)
    ) / max(positives * negatives, 1)
    return float(np.sqrt(max(variance, 0.0)))


def subgroup_failures(evaluation: Evaluation, policy: GatePolicy) -> tuple[list[str], list[str]]:
    """(failures, checks) of the standard-error-aware subgroup rule (see the module doc).

    Subgroups smaller than `subgroup_min_size`, or with one class only, are skipped and listed.
    """
    overall = float(evaluation.metrics["roc_auc"] or 0.0)
    failures: list[str] = []
    checked: list[str] = []
    for row in evaluation.subgroups:
        name = f"{row['attribute']}={row['group']}"
        if row["n"] < policy.subgroup_min_size or row.get("roc_auc") is None:
            checked.append(f"{name}: skipped (n={row['n']})")
            continue
        gap = overall - row["roc_auc"]
        se = auc_standard_error(row["roc_auc"], row["positives"], row["n"] - row["positives"])
        checked.append(f"{name}: ROC AUC {row['roc_auc']:.4f} (gap {gap:+.4f}, se {se:.4f})")
        if gap - 1.96 * se > policy.max_subgroup_auc_gap:
            failures.append(
                f"subgroup {name} (n={row['n']}) ROC AUC {row['roc_auc']:.4f} is {gap:.4f} below "
                f"the overall {overall:.4f}, beyond the max gap {policy.max_subgroup_auc_gap} "
                f"even allowing 1.96 standard errors ({se:.4f})"
            )
    return failures, checked


def _champion_verdict(new_auc: float, old_auc: float, policy: GatePolicy) -> tuple[bool, str]:
    """Does the challenger beat the champion (margin, or a champion below the floor)?"""
    gain = new_auc - old_auc
    if old_auc < policy.min_roc_auc and new_auc >= old_auc:
        return True, f"champion ROC AUC {old_auc:.4f} fell below the floor {policy.min_roc_auc}"
    if gain >= policy.min_improvement:
        return True, f"challenger beats champion by {gain:+.4f} ROC AUC"
    return False, f"gain {gain:+.4f} ROC AUC is below the margin {policy.min_improvement}"


def gate(candidate: Evaluation, champion: Evaluation | None, policy: GatePolicy) -> GateResult:
    """Decide whether `candidate` may become the production model (see the module doc).

    Args:
        candidate: The candidate's served-path holdout evaluation.
        champion: The production model's evaluation on the SAME holdout; None for a first model.
        policy: The thresholds (`GatePolicy.from_settings`).
    """
    new_auc = float(candidate.metrics["roc_auc"] or 0.0)
    old_auc = None if champion is None else float(champion.metrics["roc_auc"] or 0.0)
    failures: list[str] = []
    checked = [f"ROC AUC {new_auc:.4f} vs floor {policy.min_roc_auc}"]
    verdict, replaces_broken = "no champion: first production model", False
    if old_auc is not None:
        beats, verdict = _champion_verdict(new_auc, old_auc, policy)
        checked.append(verdict)
        failures += [] if beats else [verdict]
        replaces_broken = beats and old_auc < policy.min_roc_auc
    if new_auc < policy.min_roc_auc and not replaces_broken:
        failures.append(f"ROC AUC {new_auc:.4f} is below the floor {policy.min_roc_auc}")
    ece = float(candidate.metrics.get("ece") or 0.0)
    checked.append(f"ECE {ece:.4f} vs bound {policy.max_ece}")
    if ece > policy.max_ece:
        failures.append(f"ECE {ece:.4f} is above the calibration bound {policy.max_ece}")
    subgroup_fails, subgroup_checks = subgroup_failures(candidate, policy)
    return GateResult(
        promote=not failures and not subgroup_fails,
        reasons=[*failures, *subgroup_fails] or [verdict],
        checked=[*checked, *subgroup_checks],
        champion_auc=old_auc,
        challenger_auc=new_auc,
    )
