"""The one gate, on hand-made evaluations: first models and challengers alike."""

from __future__ import annotations

import json

from readmit.model.evaluate import Evaluation
from readmit.model.gates import GatePolicy, auc_standard_error, gate
from readmit.settings import Settings

POLICY = GatePolicy(
    min_roc_auc=0.62,
    max_subgroup_auc_gap=0.08,
    subgroup_min_size=200,
    min_improvement=0.005,
    max_ece=0.05,
)


def evaluation(
    auc: float, ece: float = 0.01, groups: list[tuple[str, int, float]] | None = None
) -> Evaluation:
    """An evaluation with subgroups (name, size, ROC AUC); one positive in eight."""
    rows = [
        {"attribute": "race", "group": g, "n": n, "positives": n // 8, "roc_auc": a}
        for g, n, a in (groups or [("A", 5000, auc)])
    ]
    return Evaluation("<30", 0.2, "given", {"roc_auc": auc, "ece": ece}, {}, rows)


def test_policy_comes_from_settings() -> None:
    settings = Settings(min_roc_auc=0.7, max_subgroup_auc_gap=0.1, subgroup_min_size=50)
    policy = GatePolicy.from_settings(settings)
    assert (policy.min_roc_auc, policy.max_subgroup_auc_gap, policy.subgroup_min_size) == (
        0.7,
        0.1,
        50,
    )


def test_first_model_needs_the_floor_calibration_and_sound_subgroups() -> None:
    ok = gate(evaluation(0.68), None, POLICY)
    assert ok.promote and ok.reasons == ["no champion: first production model"]
    low = gate(evaluation(0.60), None, POLICY)
    assert not low.promote and "below the floor" in low.reasons[0]
    badly_calibrated = gate(evaluation(0.68, ece=0.2), None, POLICY)
    assert not badly_calibrated.promote and "ECE" in badly_calibrated.reasons[0]
    json.dumps(ok.to_dict())


def test_subgroups_fail_only_when_credibly_far_below() -> None:
    groups = [("A", 5000, 0.69), ("B", 3000, 0.55), ("C", 300, 0.55), ("D", 50, 0.40)]
    result = gate(evaluation(0.70, groups=groups), None, POLICY)
    # B is credibly far below; C is as far but small enough for noise to explain it; D too small.
    assert not result.promote
    assert len(result.reasons) == 1 and "race=B" in result.reasons[0]
    assert any("race=D: skipped" in c for c in result.checked)


def test_the_same_subgroup_rule_judges_challengers() -> None:
    worse = gate(evaluation(0.70, groups=[("B", 3000, 0.55)]), evaluation(0.66), POLICY)
    assert not worse.promote and "race=B" in worse.reasons[-1]
    noisy = gate(evaluation(0.70, groups=[("C", 300, 0.55)]), evaluation(0.66), POLICY)
    assert noisy.promote


def test_challenger_better_by_margin_is_promoted() -> None:
    result = gate(evaluation(0.67), evaluation(0.66), POLICY)
    assert result.promote and "beats champion" in result.reasons[0]
    assert (result.champion_auc, result.challenger_auc) == (0.66, 0.67)


def test_challenger_within_margin_is_rejected_with_reason() -> None:
    result = gate(evaluation(0.662), evaluation(0.66), POLICY)
    assert not result.promote and "below the margin" in result.reasons[0]


def test_champion_below_floor_is_replaced_without_margin_even_below_the_floor() -> None:
    result = gate(evaluation(0.581), evaluation(0.58), POLICY)
    assert result.promote and "fell below the floor" in result.reasons[0]
    worse = gate(evaluation(0.57), evaluation(0.58), POLICY)
    assert not worse.promote


def test_poor_calibration_blocks_a_challenger() -> None:
    result = gate(evaluation(0.70, ece=0.2), evaluation(0.66), POLICY)
    assert not result.promote and any("ECE" in r for r in result.reasons)


def test_standard_error_shrinks_with_size() -> None:
    small, large = auc_standard_error(0.6, 30, 256), auc_standard_error(0.6, 2000, 18000)
    assert small > 5 * large > 0
