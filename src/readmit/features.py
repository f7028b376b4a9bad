"""Feature engineering: scikit-learn transformers shared by training, batch scoring and serving.

The fitted pipeline is `PatientHistory -> EncounterFeatures -> FeatureEncoder -> classifier`.
Every transformer has a vectorised batch mode (`transform`, a frame) and a per-record mode used by
`readmit.fastpath`; both read the same fitted tables (categories, the patient-history store), and
a parity test on real rows keeps the two modes equal.

Leakage rules (see DESIGN.md and `KNOWN_AT_PREDICTION`): patient history only ever uses EARLIER
encounters held in the patient-history store (encounter_id order is the time proxy), never an
outcome and never another row of the input; patients are only known by a salted hash of
`patient_nbr`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from readmit.schema import (
    AGE_BANDS,
    COLUMN_BY_NAME,
    INPUT_COLUMNS,
    LABEL_COLUMN,
    MEDICATIONS,
    OUTCOME_COLUMNS,
    Kind,
)

LabelDefinition = Literal["<30", "any"]
MISSING = "missing"
"""Category of a missing categorical value ("?" in the data)."""

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

# Strack et al. (2014) ICD-9 groups: (group, inclusive ranges of the integer part of the code).
ICD9_RANGES: tuple[tuple[str, tuple[tuple[int, int], ...]], ...] = (
    ("circulatory", ((390, 459), (785, 785))),
    ("respiratory", ((460, 519), (786, 786))),
    ("digestive", ((520, 579), (787, 787))),
    ("diabetes", ((250, 250),)),
    ("injury", ((800, 999),)),
    ("musculoskeletal", ((710, 739),)),
    ("genitourinary", ((580, 629), (788, 788))),
    ("neoplasms", ((140, 239),)),
)
ICD9_GROUPS = (*(g for g, _ in ICD9_RANGES), "other", "v_code", "e_code", MISSING)
ICD9_CACHE_SIZE = 8192
"""Distinct code texts remembered by the ICD-9 mappers (the data has ~900; codes repeat a lot)."""


def is_missing(value: Any) -> bool:
    """True for None, pandas <NA> and NaN: the three ways a missing field arrives."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _code_text(code: Any, of_text: Callable[[str], str]) -> str:
    """A code's text through a cached text mapper; "missing" for NA (codes arrive as text)."""
    if type(code) is str:
        return of_text(code)
    return MISSING if is_missing(code) else of_text(str(code))


def icd9_group(code: Any) -> str:
    """Clinical group of an ICD-9 code (Strack et al. 2014); V and E codes get their own groups.

    V codes are supplementary factors (e.g. V57 rehabilitation), E codes external causes of
    injury; both differ in readmission risk from "other", so they are kept apart.
    """
    return _code_text(code, _icd9_group_of_text)


@lru_cache(maxsize=ICD9_CACHE_SIZE)
def _icd9_group_of_text(raw: str) -> str:
    text = raw.strip().upper()
    if not text:
        return MISSING
    if text[0] == "V":
        return "v_code"
    if text[0] == "E":
        return "e_code"
    try:
        number = int(float(text))
    except ValueError:
        return "other"
    for group, ranges in ICD9_RANGES:
        if any(lo <= number <= hi for lo, hi in ranges):
            return group
    return "other"


def icd9_category(code: Any) -> str:
    """Three-character ICD-9 category (`428.31` -> `428`, `V57.1` -> `V57`); finer than groups."""
    return _code_text(code, _icd9_category_of_text)


@lru_cache(maxsize=ICD9_CACHE_SIZE)
def _icd9_category_of_text(raw: str) -> str:
    text = raw.strip().upper()
    return text.split(".", 1)[0] if text else MISSING


def icd9_code(code: Any) -> str:
    """The full ICD-9 code, normalised (upper case, no spaces); "missing" when absent."""
    return _code_text(code, _icd9_code_of_text)


@lru_cache(maxsize=ICD9_CACHE_SIZE)
def _icd9_code_of_text(raw: str) -> str:
    return raw.strip().upper() or MISSING


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


# --------------------------------------------------------------------------------------------
# Patient history
# --------------------------------------------------------------------------------------------

KNOWN_AT_PREDICTION = """What is known about an encounter when it is scored: the one rule.

* The encounter's own raw fields (`schema.INPUT_COLUMNS`), never its outcome.
* The patient's earlier encounters that are in the patient-history store: the encounters the
  model was trained on (time proxy: `encounter_id` order). Their visit facts count (days,
  inpatient and emergency use, medications), their outcomes do not.
* Nothing from other rows of the same input: an encounter's probability is the same whether it
  arrives alone, in a batch, first or last, and whatever other columns (outcomes included) the
  input carries. Outcome columns in a scoring input are rejected (`reject_outcomes`).

Why outcomes are not features (measured, patient-disjoint holdout of the full data, same
parameters): a model that read earlier outcomes scored 0.687 ROC AUC with its mean prediction
0.126 against a 0.112 rate when served (outcomes of a served patient's encounters never reach the
model), 0.691 and 0.114 without them. With an outcomes feed that fills the store after a label
delay (1,500 encounters), matured outcomes would add about +0.001 ROC AUC.
"""

ENTRY_FIELDS = (
    "days",  # time_in_hospital
    "inpatient",  # number_inpatient reported at that encounter
    "emergency",  # number_emergency reported at that encounter
    "emergency_admission",  # admission_type_id 1 (Emergency)
    "medications",  # num_medications
)
"""What each earlier encounter contributes to a patient's history (visit facts, no outcome)."""
PREV_FIELDS = ("days", "inpatient")
"""Fields of the immediately previous encounter kept as they are (not summed)."""
HISTORY_FEATURES = (
    "hist_n_prior",
    *(f"hist_prior_{f}" for f in ENTRY_FIELDS),
    *(f"hist_prev_{f}" for f in PREV_FIELDS),
)
"""History of a patient BEFORE an encounter: count, sums over earlier encounters, previous one."""
HistoryState = tuple[int, ...]
Entry = tuple[int, ...]
NO_HISTORY: HistoryState = (0,) * len(HISTORY_FEATURES)
_PREV_INDEX = tuple(ENTRY_FIELDS.index(f) for f in PREV_FIELDS)
EMERGENCY_ADMISSION = 1


class OutcomeInInputError(ValueError):
    """A scoring input carries an outcome column: outcomes are never known at prediction time."""


def reject_outcomes(columns: Sequence[str]) -> None:
    """Raise `OutcomeInInputError` when scoring input carries an outcome column.

    Outcomes arrive 30 days or more after discharge, through the training data (and the
    outcomes feed); a scoring input that has them was prepared, not delivered by a feed.
    """
    present = [c for c in OUTCOME_COLUMNS if c in columns]
    if present:
        raise OutcomeInInputError(
            f"outcome column {', '.join(present)!s} in a scoring input: outcomes are not known "
            "at prediction time; they belong in the training data or the outcomes feed. "
            "Drop the column and score again."
        )


def advance(state: HistoryState, entry: Entry) -> HistoryState:
    """History after one more encounter: count + 1, sums + entry, previous = this entry."""
    sums = state[1 : 1 + len(ENTRY_FIELDS)]
    return (
        state[0] + 1,
        *(a + b for a, b in zip(sums, entry, strict=True)),
        *(entry[i] for i in _PREV_INDEX),
    )


def salted_hash(salt: str, value: Any, purpose: bytes) -> int | None:
    """Keyed blake2b (64 bit) of an identifier; None when the identifier is missing.

    `purpose` separates the patient and encounter key spaces. The raw value is never kept.
    """
    if is_missing(value):
        return None
    digest = hashlib.blake2b(
        str(int(value)).encode(), key=salt.encode()[:64], person=purpose, digest_size=8
    )
    return int.from_bytes(digest.digest(), "little")


def _int(value: Any) -> int:
    return 0 if is_missing(value) else int(value)


def record_entry(record: Mapping[str, Any]) -> Entry:
    """What one encounter (a raw record dict) adds to its patient's history; 0 where unknown."""
    return (
        _int(record.get("time_in_hospital")),
        _int(record.get("number_inpatient")),
        _int(record.get("number_emergency")),
        int(_int(record.get("admission_type_id")) == EMERGENCY_ADMISSION),
        _int(record.get("num_medications")),
    )


class PatientHistory(TransformerMixin, BaseEstimator):
    """Appends `HISTORY_FEATURES` under `KNOWN_AT_PREDICTION`: the patient-history store only.

    `fit` learns the store from the training frame: per salted patient hash, the running history
    before each of its encounters (encounter_id order), and a salted encounter hash -> position
    index. Neither raw patient numbers nor encounter ids are stored. At transform time a row's
    history is:

    * a stored encounter (seen in fit): the stored history before it, so transforming the
      training frame, or any part of it, reproduces the history training used;
    * a new encounter of a known patient: everything stored for the patient (new encounters are
      assumed later than the data the model saw);
    * an unknown patient, or no `patient_nbr`: no history.

    Each row is looked up on its own: other rows of the input never count, and no outcome does.

    Args:
        salt: Secret salt of the patient/encounter hashes (`settings.history_salt`).
    """

    def __init__(self, salt: str = "readmit") -> None:
        self.salt = salt

    def fit(self, X: pd.DataFrame, y: Any = None) -> PatientHistory:
        """Build the history store from the encounters in `X` (needs ids; else an empty store)."""
        self.store_: dict[int, list[HistoryState]] = {}
        self.encounter_index_: dict[int, tuple[int, int]] = {}
        if {"patient_nbr", "encounter_id"} <= set(X.columns):
            pkeys, ekeys = self._keys(X)
            entries = frame_entries(X)
            for i in np.argsort(_order_values(X), kind="stable"):
                self._store_row(pkeys[i], ekeys[i], entries[i])
        self.n_stored_ = len(self.encounter_index_)
        return self

    def _store_row(self, pkey: int | None, ekey: int | None, entry: Entry) -> None:
        if pkey is None or ekey is None or ekey in self.encounter_index_:
            return
        states = self.store_.setdefault(pkey, [NO_HISTORY])
        self.encounter_index_[ekey] = (pkey, len(states) - 1)
        states.append(advance(states[-1], entry))

    def _keys(self, X: pd.DataFrame) -> tuple[list[int | None], list[int | None]]:
        return (
            _hash_column(X, "patient_nbr", self.salt, b"patient"),
            _hash_column(X, "encounter_id", self.salt, b"encounter"),
        )

    def record_keys(self, record: Mapping[str, Any]) -> tuple[int | None, int | None]:
        """Salted (patient, encounter) keys of one record dict; None where absent."""
        return (
            salted_hash(self.salt, record.get("patient_nbr"), b"patient"),
            salted_hash(self.salt, record.get("encounter_id"), b"encounter"),
        )

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        """The frame with the history columns appended (rows and order unchanged)."""
        check_is_fitted(self, "store_")
        pkeys, ekeys = self._keys(X)
        states = self.history(pkeys, ekeys)
        out = X.copy()
        values = np.asarray(states, dtype=np.int64).reshape(len(X), len(HISTORY_FEATURES))
        for j, name in enumerate(HISTORY_FEATURES):
            out[name] = values[:, j]
        return out

    def history(
        self, pkeys: Sequence[int | None], ekeys: Sequence[int | None]
    ) -> list[HistoryState]:
        """History before each row: the one implementation behind batch and per-record paths."""
        return [self.lookup(pkey, ekey) for pkey, ekey in zip(pkeys, ekeys, strict=True)]

    def lookup(self, pkey: int | None, ekey: int | None) -> HistoryState:
        """History of one encounter from the store alone (see the class docstring)."""
        if pkey is None:
            return NO_HISTORY
        hit = self.encounter_index_.get(ekey) if ekey is not None else None
        if hit is not None and hit[0] == pkey:
            return self.store_[pkey][hit[1]]
        return self.store_.get(pkey, [NO_HISTORY])[-1]

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Input columns (when given) followed by the history columns."""
        return np.asarray([*(input_features or []), *HISTORY_FEATURES], dtype=object)


def frame_entries(X: pd.DataFrame) -> list[Entry]:
    """Vectorised `record_entry` of every row."""
    n = len(X)

    def ints(column: str) -> np.ndarray:
        if column not in X:
            return np.zeros(n, dtype=np.int64)
        return pd.to_numeric(X[column], errors="coerce").fillna(0).to_numpy(dtype=np.int64)

    columns = [
        ints("time_in_hospital"),
        ints("number_inpatient"),
        ints("number_emergency"),
        (ints("admission_type_id") == EMERGENCY_ADMISSION).astype(np.int64),
        ints("num_medications"),
    ]
    return list(zip(*(c.tolist() for c in columns), strict=True))


def _order_values(X: pd.DataFrame) -> np.ndarray:
    """encounter_id as float (time order); NaN when missing."""
    return pd.to_numeric(X["encounter_id"], errors="coerce").astype("float64").to_numpy()


def _hash_column(X: pd.DataFrame, column: str, salt: str, purpose: bytes) -> list[int | None]:
    """Salted hashes of an id column (each distinct value hashed once); Nones if absent."""
    if column not in X:
        return [None] * len(X)
    codes, uniques = pd.factorize(X[column].to_numpy(dtype=object), use_na_sentinel=True)
    hashed = [salted_hash(salt, v, purpose) for v in uniques]
    return [hashed[c] if c >= 0 else None for c in codes]


# --------------------------------------------------------------------------------------------
# Encounter features
# --------------------------------------------------------------------------------------------

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
# --------------------------------------------------------------------------------------------


class FeatureEncoder(TransformerMixin, BaseEstimator):
    """Dense float32 design matrix: numeric columns as they are, categoricals one-hot or
    target-encoded.

    One-hot: categories seen fewer than `min_frequency` times in fit, and unknown ones at
    transform time, share one `<column>=other` indicator, so the width never changes.
    Target encoding (`target_columns`, for codes with hundreds of values): the smoothed
    outcome rate of the category, `(positives + smoothing x prior) / (count + smoothing)`,
    the prior for unseen ones. Learned from labels, so `fit_transform` returns CROSS-FITTED
    encodings for the training rows (each row encoded by tables fitted without its fold; folds
    grouped by `groups`, the patient, when given) while `transform` uses tables fitted on all
    rows. Without that the model would learn from encodings that contain its own labels.

    The matrix is DENSE on purpose: XGBoost reads the zeros of a sparse matrix as missing, so
    a dense per-record vector would not reproduce a sparse pipeline's probabilities.

    Args:
        min_frequency: Minimum count of a category in fit to get its own indicator.
        target_columns: Categorical columns to target-encode instead of one-hot.
        smoothing: Pseudo-count of the prior in target encoding.
        n_splits: Folds of the cross-fitting in `fit_transform`.
    """

    def __init__(
        self,
        min_frequency: int = 100,
        target_columns: tuple[str, ...] = (),
        smoothing: float = 20.0,
        n_splits: int = 5,
    ) -> None:
        self.min_frequency = min_frequency
        self.target_columns = target_columns
        self.smoothing = smoothing
        self.n_splits = n_splits

    def fit(self, X: pd.DataFrame, y: Any = None) -> FeatureEncoder:
        """Learn column kinds, frequent categories and (with `y`) target-encoding tables."""
        categorical = [c for c in X.columns if X[c].dtype == object]
        absent = [c for c in self.target_columns if c not in categorical]
        if absent:
            raise ValueError(f"target_columns not among the categorical columns: {absent}")
        if self.target_columns and y is None:
            raise ValueError("target encoding needs the labels: fit(X, y)")
        self.target_columns_ = list(self.target_columns)
        self.categorical_columns_ = [c for c in categorical if c not in self.target_columns_]
        self.numeric_columns_ = [c for c in X.columns if c not in categorical]
        self.categories_: dict[str, list[str]] = {}
        for c in self.categorical_columns_:
            counts = pd.Series(X[c]).value_counts()
            self.categories_[c] = sorted(str(v) for v in counts.index[counts >= self.min_frequency])
        self._layout()
        self.prior_, self.target_maps_ = self._target_tables(X, y)
        return self

    def _layout(self) -> None:
        names = list(self.numeric_columns_)
        self.index_: dict[str, dict[str, int]] = {}
        self.other_index_: dict[str, int] = {}
        for c in self.categorical_columns_:
            self.index_[c] = {v: len(names) + i for i, v in enumerate(self.categories_[c])}
            names += [f"{c}={v}" for v in self.categories_[c]]
            self.other_index_[c] = len(names)
            names.append(f"{c}=other")
        self.target_index_ = {c: len(names) + i for i, c in enumerate(self.target_columns_)}
        names += [f"{c}=target_rate" for c in self.target_columns_]
        self.feature_names_out_ = np.asarray(names, dtype=object)

    def _target_tables(self, X: pd.DataFrame, y: Any) -> tuple[float, dict[str, dict[str, float]]]:
        """Smoothed outcome rate per category of each target column (and the prior)."""
        if not self.target_columns_:
            return 0.0, {}
        labels = np.asarray(y, dtype=np.float64)
        prior = float(labels.mean())
        maps = {}
        for c in self.target_columns_:
            stats = pd.DataFrame({"v": X[c].to_numpy(dtype=object), "y": labels}).groupby("v")["y"]
            sums, counts = stats.sum(), stats.count()
            rates = (sums + self.smoothing * prior) / (counts + self.smoothing)
            maps[c] = {str(k): float(v) for k, v in rates.items()}
        return prior, maps

    def fit_transform(
        self, X: pd.DataFrame, y: Any = None, groups: Any = None, **fit_params: Any
    ) -> np.ndarray:
        """Fit, then encode the SAME rows with cross-fitted target encodings (see class doc)."""
        self.fit(X, y)
        out = self.transform(X)
        if not self.target_columns_:
            return out
        from sklearn.model_selection import GroupKFold, KFold

        splitter = (
            GroupKFold(self.n_splits)
            if groups is not None
            else KFold(self.n_splits, shuffle=True, random_state=0)
        )
        labels = np.asarray(y)
        for fit_idx, enc_idx in splitter.split(out, labels, groups):
            prior, maps = self._target_tables(X.iloc[fit_idx], labels[fit_idx])
            for c in self.target_columns_:
                values = pd.Series(X[c].to_numpy(dtype=object)[enc_idx]).map(maps[c])
                out[enc_idx, self.target_index_[c]] = values.fillna(prior).to_numpy(np.float64)
        return out

    def transform(self, X: pd.DataFrame) -> np.ndarray:
        """float32 matrix (rows x `get_feature_names_out()`), NaN for missing numbers."""
        check_is_fitted(self, "feature_names_out_")
        needed = [*self.numeric_columns_, *self.categorical_columns_, *self.target_columns_]
        require_columns(X, needed)
        out = np.zeros((len(X), len(self.feature_names_out_)), dtype=np.float32)
        k = len(self.numeric_columns_)
        out[:, :k] = X[self.numeric_columns_].to_numpy(dtype=np.float64, na_value=np.nan)
        rows = np.arange(len(X))
        for c in self.categorical_columns_:
            idx = pd.Series(X[c].to_numpy(dtype=object)).map(self.index_[c])
            out[rows, idx.fillna(self.other_index_[c]).to_numpy(dtype=np.int64)] = 1.0
        for c in self.target_columns_:
            values = pd.Series(X[c].to_numpy(dtype=object)).map(self.target_maps_[c])
            out[:, self.target_index_[c]] = values.fillna(self.prior_).to_numpy(np.float64)
        return out

    def encode_record(self, features: Mapping[str, Any]) -> np.ndarray:
        """Per-record twin of `transform`: one float32 row from `EncounterFeatures` output."""
        numeric = self.numeric_columns_
        row = np.zeros(len(self.feature_names_out_), dtype=np.float32)
        row[: len(numeric)] = [features[c] for c in numeric]
        row[
            [
                self.index_[c].get(features[c], self.other_index_[c])
                for c in self.categorical_columns_
            ]
        ] = 1.0
        for c in self.target_columns_:
            row[self.target_index_[c]] = self.target_maps_[c].get(features[c], self.prior_)
        return row

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the design-matrix columns (`col=value` indicators, `col=target_rate`)."""
        check_is_fitted(self, "feature_names_out_")
        return self.feature_names_out_
