"""Challenger gate decisions on hand-made evaluations."""

from __future__ import annotations

from readmit.model.gates import GatePolicy, challenger_gate

POLICY = GatePolicy(
    min_improvement=0.005,
    champion_floor=0.62,
    subgroup_tolerance=0.03,
    subgroup_min_size=100,
    max_ece=0.05,
)


def evaluation(auc: float, ece: float = 0.01, subgroup_auc: float | None = None, n: int = 500):
    sub = subgroup_auc if subgroup_auc is not None else auc
    return {
        "metrics": {"roc_auc": auc, "ece": ece},
        "subgroups": [
            {"attribute": "race", "group": "Asian", "n": n, "roc_auc": sub},
            {"attribute": "gender", "group": "Female", "n": 5000, "roc_auc": auc},
        ],
    }


def test_challenger_better_by_margin_is_promoted():
    result = challenger_gate(evaluation(0.66), evaluation(0.67), POLICY)
    assert result.promote and "beats champion" in result.reasons[0]


def test_challenger_within_margin_is_rejected_with_reason():
    result = challenger_gate(evaluation(0.66), evaluation(0.662), POLICY)
    assert not result.promote and "below the margin" in result.reasons[0]


def test_champion_below_floor_is_replaced_without_margin():
    result = challenger_gate(evaluation(0.58), evaluation(0.581), POLICY)
    assert result.promote and "fell below floor" in result.reasons[0]


def test_subgroup_regression_blocks_promotion_but_small_groups_are_ignored():
    worse = challenger_gate(evaluation(0.66), evaluation(0.70, subgroup_auc=0.60), POLICY)
    assert not worse.promote and "race=Asian" in worse.reasons[-1]
    tiny = challenger_gate(
        evaluation(0.66, n=50), evaluation(0.70, subgroup_auc=0.60, n=50), POLICY
    )
    assert tiny.promote


def test_poor_calibration_blocks_promotion():
    result = challenger_gate(evaluation(0.66), evaluation(0.70, ece=0.2), POLICY)
    assert not result.promote and "ECE" in result.reasons[0]


def test_first_model_needs_only_floor_and_calibration():
    assert challenger_gate(None, evaluation(0.66), POLICY).promote
    assert not challenger_gate(None, evaluation(0.55), POLICY).promote


def _evaluation_with_subgroup(overall: float, sub_auc: float, n: int, positives: int):
    from readmit.model.evaluate import Evaluation

    metrics = {"roc_auc": overall}
    rows = [
        {
            "attribute": "age",
            "group": "[90-100)",
            "n": n,
            "positives": positives,
            "roc_auc": sub_auc,
        }
    ]
    return Evaluation("<30", 0.2, "given", metrics, {}, rows)


def test_absolute_gate_ignores_noise_of_small_subgroups_but_not_real_gaps():
    from readmit.model.evaluate import check_absolute_gates

    noisy = _evaluation_with_subgroup(0.675, 0.539, n=286, positives=30)
    assert check_absolute_gates(noisy, 0.62, 0.08, 200).passed
    real = _evaluation_with_subgroup(0.675, 0.539, n=20_000, positives=2_000)
    decision = check_absolute_gates(real, 0.62, 0.08, 200)
    assert not decision.passed and "age=[90-100)" in decision.reasons[0]
    assert not check_absolute_gates(
        _evaluation_with_subgroup(0.60, 0.60, 5000, 500), 0.62, 0.08, 200
    ).passed
