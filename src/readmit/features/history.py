"""Patient history under the one rule of what is known at prediction time.

Patients are only known by a salted hash of `patient_nbr`; history only ever uses EARLIER
encounters held in the patient-history store (encounter_id order is the time proxy), never an
outcome and never another row of the input.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from readmit.features.common import is_missing
from readmit.schema import OUTCOME_COLUMNS

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
