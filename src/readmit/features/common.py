"""What every feature step shares: the missing-value rule, the label, required columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from readmit.schema import LABEL_COLUMN, LabelDefinition

MISSING = "missing"
"""Category of a missing categorical value ("?" in the data)."""


def is_missing(value: Any) -> bool:
    """True for None, pandas <NA> and NaN: the three ways a missing field arrives."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def make_label(frame: pd.DataFrame, definition: LabelDefinition = "<30") -> np.ndarray:
    """Binary outcome: readmitted within 30 days (`<30`, the clinical standard) or at all (`any`).

    Raises:
        ValueError: unknown definition, no `readmitted` column, or missing outcomes.
    """
    if definition not in ("<30", "any"):
        raise ValueError(f"label definition must be '<30' or 'any', got {definition!r}")
    if LABEL_COLUMN not in frame:
        raise ValueError(f"the frame has no '{LABEL_COLUMN}' column: no label to learn from")
    outcome = frame[LABEL_COLUMN]
    if outcome.isna().any():
        raise ValueError(f"'{LABEL_COLUMN}' is missing in {int(outcome.isna().sum())} rows")
    positive = outcome.eq("<30") if definition == "<30" else outcome.ne("NO")
    return positive.to_numpy(dtype=np.int8)


def require_columns(frame: pd.DataFrame, columns: Sequence[str]) -> None:
    """Raise a ValueError naming every required column the frame lacks."""
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ValueError(f"missing required encounter fields: {', '.join(absent)}")
