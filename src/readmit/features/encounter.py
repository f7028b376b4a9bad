"""Per-encounter features from the raw fields: counts, ordinal age, medications, diagnoses."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from readmit.features.common import MISSING, is_missing, require_columns
from readmit.features.history import HISTORY_FEATURES
from readmit.features.icd9 import icd9_category, icd9_code, icd9_group
from readmit.schema import AGE_BANDS, COLUMN_BY_NAME, INPUT_COLUMNS, MEDICATIONS, Kind

DIAG_COLUMNS = ("diag_1", "diag_2", "diag_3")
UTILISATION_COLUMNS = ("number_outpatient", "number_emergency", "number_inpatient")
# Raw categorical columns one-hot encoded as they are (coded ids become strings "1", "2", ...).
CATEGORICAL_INPUTS = tuple(
    c.name
    for c in (COLUMN_BY_NAME[n] for n in INPUT_COLUMNS)
    if c.kind is Kind.CATEGORY or (c.kind is Kind.INT and c.values is not None)
)
NUMERIC_INPUTS = tuple(
    n for n in INPUT_COLUMNS if COLUMN_BY_NAME[n].kind is Kind.INT and n not in CATEGORICAL_INPUTS
)
AGE_MIDPOINTS: dict[str, float] = {band: 5.0 + 10 * i for i, band in enumerate(AGE_BANDS)}
"""Ordinal age: the midpoint of the ten-year band (`[70-80)` -> 75)."""


NUMERIC_NAMES = (
    *NUMERIC_INPUTS,
    "age_years",
    "utilisation_total",
    "meds_used",
    "meds_up",
    "meds_down",
    "meds_changed",
    "n_diabetes_diagnoses",
)


class EncounterFeatures(TransformerMixin, BaseEstimator):
    """Cleaning and per-encounter features from the raw fields (stateless apart from names).

    Numeric: the raw counts, ordinal age, utilisation total (outpatient + emergency + inpatient),
    medication counts (used, up, down, changed over `schema.MEDICATIONS`), number of diabetes
    diagnoses, plus any history columns present. Categorical (strings, missing -> "missing"):
    the coded and categorical raw fields, ICD-9 groups of diag_1..3, with `icd9_detail` their
    three-character ICD-9 categories, and with `icd9_codes` the full codes (`diag_1_code`, too
    many values to one-hot: meant for target encoding).

    Args:
        icd9_detail: Also emit the three-character ICD-9 categories of diag_1..3.
        icd9_codes: Also emit the full ICD-9 codes of diag_1..3.
    """

    def __init__(self, icd9_detail: bool = True, icd9_codes: bool = False) -> None:
        self.icd9_detail = icd9_detail
        self.icd9_codes = icd9_codes

    def fit(self, X: pd.DataFrame, y: Any = None) -> EncounterFeatures:
        """Record the output columns (nothing is learned from the data)."""
        require_columns(X, INPUT_COLUMNS)
        self.history_columns_ = [c for c in HISTORY_FEATURES if c in X.columns]
        self.numeric_columns_ = [*NUMERIC_NAMES, *self.history_columns_]
        self.categorical_columns_ = [*CATEGORICAL_INPUTS, *self._diag_names()]
        return self

    def _diag_names(self) -> list[str]:
        names = [f"{d}_group" for d in DIAG_COLUMNS]
        names += [f"{d}_category" for d in DIAG_COLUMNS] if self.icd9_detail else []
        return names + ([f"{d}_code" for d in DIAG_COLUMNS] if self.icd9_codes else [])

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """Numeric columns as float64 (NaN = missing), categorical ones as object strings."""
        check_is_fitted(self, "numeric_columns_")
        require_columns(X, [*INPUT_COLUMNS, *self.history_columns_])
        numeric = {c: _float(X[c]) for c in NUMERIC_INPUTS}
        numeric["age_years"] = X["age"].map(AGE_MIDPOINTS).astype("float64").to_numpy()
        numeric["utilisation_total"] = np.vstack([numeric[c] for c in UTILISATION_COLUMNS]).sum(0)
        states = {s: _state_matrix(X, s) for s in ("Up", "Down", "No")}
        numeric["meds_used"] = len(MEDICATIONS) - states["No"].sum(axis=1).astype("float64")
        numeric["meds_up"] = states["Up"].sum(axis=1).astype("float64")
        numeric["meds_down"] = states["Down"].sum(axis=1).astype("float64")
        numeric["meds_changed"] = numeric["meds_up"] + numeric["meds_down"]
        groups = {d: _map_unique(X[d], icd9_group) for d in DIAG_COLUMNS}
        numeric["n_diabetes_diagnoses"] = sum(
            (g == "diabetes").astype("float64") for g in groups.values()
        )
        numeric.update({c: _float(X[c]) for c in self.history_columns_})
        cats = {c: _map_unique(X[c], _text) for c in CATEGORICAL_INPUTS}
        cats.update({f"{d}_group": groups[d] for d in DIAG_COLUMNS})
        if self.icd9_detail:
            cats.update({f"{d}_category": _map_unique(X[d], icd9_category) for d in DIAG_COLUMNS})
        if self.icd9_codes:
            cats.update({f"{d}_code": _map_unique(X[d], icd9_code) for d in DIAG_COLUMNS})
        return pd.DataFrame({**numeric, **cats}, index=X.index)[self.get_feature_names_out()]

    def transform_record(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Per-record twin of `transform` for one raw encounter dict (None = missing)."""
        out: dict[str, Any] = {c: _num(record.get(c)) for c in NUMERIC_INPUTS}
        out["age_years"] = AGE_MIDPOINTS.get(record.get("age"), np.nan)  # type: ignore[arg-type]
        out["utilisation_total"] = sum(out[c] for c in UTILISATION_COLUMNS)
        states = [record.get(m) for m in MEDICATIONS]
        out["meds_used"] = float(len(MEDICATIONS) - states.count("No"))
        out["meds_up"] = float(states.count("Up"))
        out["meds_down"] = float(states.count("Down"))
        out["meds_changed"] = out["meds_up"] + out["meds_down"]
        groups = {d: icd9_group(record.get(d)) for d in DIAG_COLUMNS}
        out["n_diabetes_diagnoses"] = float(sum(g == "diabetes" for g in groups.values()))
        out.update({c: _num(record.get(c)) for c in self.history_columns_})
        out.update({c: _text(record.get(c)) for c in CATEGORICAL_INPUTS})
        out.update({f"{d}_group": groups[d] for d in DIAG_COLUMNS})
        if self.icd9_detail:
            out.update({f"{d}_category": icd9_category(record.get(d)) for d in DIAG_COLUMNS})
        if self.icd9_codes:
            out.update({f"{d}_code": icd9_code(record.get(d)) for d in DIAG_COLUMNS})
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Numeric columns, then categorical ones."""
        check_is_fitted(self, "numeric_columns_")
        return np.asarray([*self.numeric_columns_, *self.categorical_columns_], dtype=object)


def _state_matrix(X: pd.DataFrame, state: str) -> np.ndarray:
    """rows x medications: True where the medication is in `state`."""
    return np.column_stack([X[m].eq(state).fillna(False).to_numpy(dtype=bool) for m in MEDICATIONS])


def _float(column: pd.Series) -> np.ndarray:
    return pd.to_numeric(column, errors="coerce").astype("float64").to_numpy()


def _num(value: Any) -> float:
    if type(value) is int or type(value) is float:  # the common case, first (NaN stays NaN)
        return float(value)
    if is_missing(value):
        return float("nan")
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _text(value: Any) -> str:
    """Category text: "missing" for NA; coded ids become their decimal text (1 and 1.0 -> "1")."""
    if type(value) is str:  # the common case, first: per-record scoring calls this 36 times
        return value
    if is_missing(value):
        return MISSING
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _map_unique(column: pd.Series, fn: Callable[[Any], str]) -> np.ndarray:
    """Apply a scalar function once per distinct value (codes repeat a lot)."""
    codes, uniques = pd.factorize(column.to_numpy(dtype=object), use_na_sentinel=True)
    mapped = np.asarray([fn(v) for v in uniques] + [fn(None)], dtype=object)
    return mapped[codes]


# --------------------------------------------------------------------------------------------
# Encoding
