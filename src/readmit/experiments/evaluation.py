"""Judge a running experiment on the served rows whose outcomes matured.

The rows come from monitoring's windows (`readmit.monitoring.windows`: each logged row keeps
the experiment id, the answering variant and, in shadow mode, the challenger's probability), the
outcomes from the outcomes feed; the same cohort rule and the same "received after it was
served" rule as monitoring's realised performance apply (`windows.matured_outcomes`). The
decision is `sequential.shadow_test` (paired) or `sequential.canary_test` (two arms).

A decision is final: the flow stops looking once an experiment decided (a confidence sequence
that crossed once has done its job; looking on would only add chances to cross back).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from readmit.experiments import sequential
from readmit.experiments.spec import (
    CHALLENGER,
    CHALLENGER_PROBABILITY,
    CHAMPION,
    EXPERIMENT_ID,
    VARIANT,
    ExperimentSpec,
)
from readmit.monitoring.served import PROBABILITY_COLUMN
from readmit.monitoring.windows import LABEL, matured_outcomes
from readmit.schema import LabelDefinition


class NotEnoughOutcomes(ValueError):
    """Nothing to judge yet: no matured outcome for one of the arms."""


@dataclass(frozen=True)
class ExperimentData:
    """What the experiment has seen: served cohort encounters and those with an outcome."""

    served: int
    matured: pd.DataFrame
    outcomes_before_prediction: int


def experiment_data(
    served: pd.DataFrame,
    outcomes: pd.DataFrame,
    spec: ExperimentSpec,
    label_definition: LabelDefinition,
) -> ExperimentData:
    """The experiment's cohort rows (latest prediction per encounter) with matured outcomes."""
    rows = served[served[EXPERIMENT_ID].astype("string") == spec.id]
    cohort, early = matured_outcomes(rows, outcomes, label_definition)
    return ExperimentData(len(cohort), cohort[cohort[LABEL].notna()], early)


def judge(
    data: ExperimentData, spec: ExperimentSpec, policy: sequential.SequentialPolicy
) -> sequential.ExperimentResult:
    """One look: the anytime-valid decision on every matured outcome so far.

    Raises:
        NotEnoughOutcomes: an arm has no matured outcome yet (nothing can be said).
    """
    rows = data.matured
    labels = rows[LABEL].to_numpy(dtype=float)
    if spec.mode == "shadow":
        paired = rows[rows[CHALLENGER_PROBABILITY].notna()]
        if paired.empty:
            raise NotEnoughOutcomes("no encounter with a matured outcome was scored by both")
        return sequential.shadow_test(
            paired[PROBABILITY_COLUMN].to_numpy(dtype=float),
            paired[CHALLENGER_PROBABILITY].to_numpy(dtype=float),
            paired[LABEL].to_numpy(dtype=float),
            policy,
        )
    arms = {v: (rows[VARIANT] == v).to_numpy() for v in (CHAMPION, CHALLENGER)}
    if not all(mask.any() for mask in arms.values()):
        raise NotEnoughOutcomes("an arm of the canary has no matured outcome yet")
    probabilities = rows[PROBABILITY_COLUMN].to_numpy(dtype=float)
    return sequential.canary_test(
        probabilities[arms[CHAMPION]],
        labels[arms[CHAMPION]],
        probabilities[arms[CHALLENGER]],
        labels[arms[CHALLENGER]],
        policy,
    )


def daily_looks(data: ExperimentData, spec: ExperimentSpec, policy: sequential.SequentialPolicy,
                time_column: str) -> pd.DataFrame:  # fmt: skip
    """The confidence sequence over the encounters served up to each day that now have an
    outcome (the report's chart): how the interval narrowed, and where it crossed."""
    rows = data.matured.sort_values(time_column, kind="stable")
    days = pd.to_datetime(rows[time_column], utc=True).dt.floor("D")
    out = []
    for day in days.drop_duplicates():
        seen = ExperimentData(data.served, rows[days <= day], 0)
        try:
            result = judge(seen, spec, policy)
        except NotEnoughOutcomes:
            continue
        out.append({"day": day.date().isoformat(), "n": result.n, "estimate": result.estimate,
                    "cs_lower": result.cs_lower, "cs_upper": result.cs_upper,
                    "outcome": result.outcome})  # fmt: skip
    frame = pd.DataFrame(out, columns=["day", "n", "estimate", "cs_lower", "cs_upper", "outcome"])
    return frame.replace([np.inf, -np.inf], np.nan)
