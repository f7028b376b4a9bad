"""Holdout evaluation: discrimination, calibration, an operating threshold, subgroups, gates.

Every result converts to plain JSON (`to_dict()`), because the registry stores it as metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    log_loss,
    precision_recall_curve,
    roc_auc_score,
)

from readmit.features import MISSING, make_label
from readmit.schema import OUTCOME_COLUMNS, LabelDefinition
from readmit.serving.scoring import served_probabilities

SUBGROUP_ATTRIBUTES = ("race", "gender", "age")
SMALL_GROUP = 200
"""Subgroups with fewer encounters than this are flagged `small` (their metrics are noisy)."""
CALIBRATION_BINS = 10
ThresholdRule = Literal["model", "max_f1_holdout"]


def max_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """Probability threshold that maximises F1 (flag at or above it).

    Used on patient-grouped out-of-fold TRAINING predictions (see `readmit.model.train`), so the
    holdout never influences the operating point. F1 balances missed readmissions against
    false alarms without assuming a cost ratio nobody has given us.
    """
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def threshold_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float | None]:
    """Sensitivity, specificity, PPV, NPV, F1 and the flagged share at a threshold."""
    flag = p >= threshold
    tp = int(np.sum(flag & (y == 1)))
    fp = int(np.sum(flag & (y == 0)))
    fn = int(np.sum(~flag & (y == 1)))
    tn = int(np.sum(~flag & (y == 0)))

    def ratio(a: int, b: int) -> float | None:
        return round(a / b, 6) if b else None

    return {
        "sensitivity": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
        "ppv": ratio(tp, tp + fp),
        "npv": ratio(tn, tn + fn),
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "flagged_share": ratio(tp + fp, len(y)),
    }


def calibration_table(y: np.ndarray, p: np.ndarray, n_bins: int = CALIBRATION_BINS) -> dict:
    """Reliability bins of equal size (quantiles of the predictions) and the ECE.

    Equal-count bins, because readmission risks crowd below 0.2: fixed-width bins would put
    almost everything in two bins. ECE = sum over bins of |observed - predicted| x bin share.
    """
    order = np.argsort(p, kind="stable")
    bins = [b for b in np.array_split(order, n_bins) if len(b)]
    predicted = [float(np.mean(p[b])) for b in bins]
    observed = [float(np.mean(y[b])) for b in bins]
    counts = [len(b) for b in bins]
    ece = sum(abs(o - q) * n for o, q, n in zip(observed, predicted, counts, strict=True)) / len(y)
    return {
        "mean_predicted": [round(v, 6) for v in predicted],
        "observed_rate": [round(v, 6) for v in observed],
        "count": counts,
        "ece": round(float(ece), 6),
    }


def core_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    """ROC AUC, PR AUC, Brier and log loss; AUCs are None when only one class is present."""
    both = 0 < int(y.sum()) < len(y)
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    return {
        "roc_auc": round(float(roc_auc_score(y, p)), 6) if both else None,
        "pr_auc": round(float(average_precision_score(y, p)), 6) if both else None,
        "brier": round(float(brier_score_loss(y, p)), 6),
        "log_loss": round(float(log_loss(y, clipped, labels=[0, 1])), 6),
    }


@dataclass
class Evaluation:
    """Holdout evaluation of one model; all fields are JSON-ready."""

    label_definition: str
    threshold: float
    threshold_rule: str
    metrics: dict[str, Any]
    calibration: dict[str, Any]
    subgroups: list[dict[str, Any]] = field(default_factory=list)

    def headline(self) -> dict[str, float]:
        """The figures people compare: ROC AUC, PR AUC, Brier, log loss, and calibration as
        served (ECE, mean predicted against prevalence)."""
        keys = ("roc_auc", "pr_auc", "brier", "log_loss", "ece", "mean_predicted", "prevalence")
        return {k: self.metrics[k] for k in keys if k in self.metrics}

    def subgroup_rows(self) -> list[dict[str, Any]]:
        """One row per (attribute, group) with its size and metrics."""
        return [dict(r) for r in self.subgroups]

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Evaluation:
        """A registered model's holdout evaluation, as its lineage keeps it
        (`lineage.model_metadata`): what a reviewer compares without scoring again."""
        return cls(
            label_definition=str(metadata.get("label_definition")),
            threshold=float(metadata.get("threshold", 0.5)),
            threshold_rule=str(metadata.get("threshold_rule", "")),
            metrics=dict(metadata.get("metrics") or {}),
            calibration=dict(metadata.get("calibration") or {}),
            subgroups=list(metadata.get("subgroup_metrics") or []),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (the registry's metadata)."""
        return {
            "label_definition": self.label_definition,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "metrics": dict(self.metrics),
            "calibration": dict(self.calibration),
            "subgroups": self.subgroup_rows(),
        }


def subgroup_table(
    frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, threshold: float, small: int = SMALL_GROUP
) -> list[dict[str, Any]]:
    """The same metrics per race, gender and age band, with sizes; small groups flagged."""
    rows = []
    for attribute in SUBGROUP_ATTRIBUTES:
        values = frame[attribute].astype("object").where(frame[attribute].notna(), MISSING)
        for group in sorted(values.unique(), key=str):
            mask = (values == group).to_numpy()
            yg, pg = y[mask], p[mask]
            rows.append(
                {
                    "attribute": attribute,
                    "group": str(group),
                    "n": int(mask.sum()),
                    "positives": int(yg.sum()),
                    "small": bool(mask.sum() < small),
                    "mean_predicted": round(float(pg.mean()), 6),
                    **core_metrics(yg, pg),
                    **threshold_metrics(yg, pg, threshold),
                }
            )
    return rows


def evaluate_model(
    model: Any,
    holdout_frame: pd.DataFrame,
    *,
    label: LabelDefinition = "<30",
    threshold: float | None = None,
) -> Evaluation:
    """Evaluate a fitted model on a (patient-disjoint) holdout of raw encounters, AS SERVED.

    The holdout's outcomes are split off first; the rows are then scored by the service's own
    scorer (`scoring.served_probabilities`), so these are the figures a client of the service
    would measure (`served_path: true` in the metrics).

    Threshold rule: an explicit `threshold` if given; otherwise the model's own `threshold_`,
    which training chose to maximise F1 on patient-grouped out-of-fold TRAINING predictions
    (`max_f1_oof`). Only a model without one falls back to maximising F1 on this holdout, and the
    rule then says so (`max_f1_holdout`, optimistic).
    """
    y = make_label(holdout_frame, label).astype(np.int64)
    p = served_probabilities(model, holdout_frame.drop(columns=list(OUTCOME_COLUMNS)))
    if threshold is not None:
        rule = "given"
    elif getattr(model, "threshold_", None) is not None:
        threshold, rule = float(model.threshold_), str(getattr(model, "threshold_rule_", "model"))
    else:
        threshold, rule = max_f1_threshold(y, p), "max_f1_holdout"
    calibration = calibration_table(y, p)
    metrics = {
        "n": len(y),
        "positives": int(y.sum()),
        "prevalence": round(float(y.mean()), 6),
        "mean_predicted": round(float(p.mean()), 6),
        "calibration_gap": round(abs(float(p.mean()) - float(y.mean())), 6),
        "served_path": True,
        **core_metrics(y, p),
        "ece": calibration["ece"],
        **threshold_metrics(y, p, threshold),
    }
    subgroups = subgroup_table(holdout_frame, y, p, threshold)
    return Evaluation(label, round(float(threshold), 6), rule, metrics, calibration, subgroups)
