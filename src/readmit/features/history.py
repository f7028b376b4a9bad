"""Patient history under the one rule of what is known at prediction time.

Patients and encounters are only known by their keyed pseudonyms (`readmit.pseudonyms`,
columns `patient_key` / `encounter_key`); history only ever uses EARLIER encounters held in the
patient-history store (encounter_id order is the time proxy), never an outcome and never another
row of the input.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from readmit.features.common import is_missing
from readmit.pseudonyms import ENCOUNTER_KEY, PATIENT_KEY
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
_logger = logging.getLogger("readmit.features.history")


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


_AS_OF: ContextVar[float | None] = ContextVar("readmit_history_as_of", default=None)


@contextmanager
def as_of(at: float) -> Iterator[None]:
    """Lookups inside see only served encounters recorded before `at` (unix time).

    The service scores a request as of the instant it logs with the request's rows, and the
    skew check re-scores a logged row as of that same instant: an encounter that monitoring
    records while the request is being scored is seen by neither, so both see one view.
    """
    token = _AS_OF.set(at)
    try:
        yield
    finally:
        _AS_OF.reset(token)


def recorded_before_as_of(entries: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
    """Served entries `(encounter key, entry, recorded at)` per patient, cut at `as_of` (all of
    them outside an `as_of` block)."""
    at = _AS_OF.get()
    if at is None:
        return {pkey: list(items) for pkey, items in entries.items()}
    kept = {pkey: [item for item in items if item[2] < at] for pkey, items in entries.items()}
    return {pkey: items for pkey, items in kept.items() if items}


class PatientHistory(TransformerMixin, BaseEstimator):
    """Appends `HISTORY_FEATURES` under `KNOWN_AT_PREDICTION`: the patient-history store only.

    Rows carry keyed pseudonyms (`patient_key`, `encounter_key`: `readmit.pseudonyms`), never
    raw identifiers, and the key itself never enters the model: only its `key_fingerprint`, so
    a process with another key can refuse the model. `fit` learns the store from the training
    frame: per patient key, the running history before each of its encounters (encounter_id
    order when the frame still has it, else row order), and an encounter key -> position index.
    At transform time a row's history is:

    * a stored encounter (seen in fit): the stored history before it, so transforming the
      training frame, or any part of it, reproduces the history training used;
    * a new encounter of a known patient: everything stored for the patient (new encounters are
      assumed later than the data the model saw);
    * an unknown patient, or no patient key: no history;
    * with a served-history store attached (`attach`, `readmit.features.served_history`): plus
      the patient's encounters served since, in served order, up to the encounter itself (those
      the model was trained on are already counted and skipped), advanced by the same rule.

    Each row is looked up on its own: other rows of the input never count, and no outcome does.
    A store that fails is logged and counted (`served_history_errors`), never fatal: the row
    gets the model's history alone.

    Args:
        key_fingerprint: `pseudonyms.fingerprint` of the key the rows were keyed with.
    """

    def __init__(self, key_fingerprint: str | None = None) -> None:
        self.key_fingerprint = key_fingerprint

    def attach(self, store: Any) -> PatientHistory:
        """Read served encounters from `store` too (a `served_history.ServedHistory`; None
        detaches). The store is a live connection: it is never pickled with the model."""
        self.served_store = store
        self.served_history_errors = getattr(self, "served_history_errors", 0)
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("served_store", None)
        return state

    def _served(self, pkeys: Sequence[str | None]) -> dict[str, list[Any]]:
        store = getattr(self, "served_store", None)
        if store is None:
            return {}
        try:
            return recorded_before_as_of(store.entries([k for k in pkeys if k is not None]))
        except Exception:  # the store must never take scoring down; say so and count it
            self.served_history_errors = getattr(self, "served_history_errors", 0) + 1
            _logger.exception("served-history store failed: the model's history alone is used")
            return {}

    def fit(self, X: pd.DataFrame, y: Any = None) -> PatientHistory:
        """Build the history store from the encounters in `X` (needs keys; else an empty store)."""
        self.store_: dict[str, list[HistoryState]] = {}
        self.encounter_index_: dict[str, tuple[str, int]] = {}
        if {PATIENT_KEY, ENCOUNTER_KEY} <= set(X.columns):
            pkeys, ekeys = self._keys(X)
            entries = frame_entries(X)
            for i in np.argsort(_order_values(X), kind="stable"):
                self._store_row(pkeys[i], ekeys[i], entries[i])
        self.n_stored_ = len(self.encounter_index_)
        return self

    def _store_row(self, pkey: str | None, ekey: str | None, entry: Entry) -> None:
        if pkey is None or ekey is None or ekey in self.encounter_index_:
            return
        states = self.store_.setdefault(pkey, [NO_HISTORY])
        self.encounter_index_[ekey] = (pkey, len(states) - 1)
        states.append(advance(states[-1], entry))

    @staticmethod
    def _keys(X: pd.DataFrame) -> tuple[list[str | None], list[str | None]]:
        return (_key_list(X, PATIENT_KEY), _key_list(X, ENCOUNTER_KEY))

    @staticmethod
    def record_keys(record: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """(patient, encounter) keys of one pseudonymised record; None where absent."""
        return (record.get(PATIENT_KEY), record.get(ENCOUNTER_KEY))

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
        self, pkeys: Sequence[str | None], ekeys: Sequence[str | None]
    ) -> list[HistoryState]:
        """History before each row: the one implementation behind batch and per-record paths."""
        served = self._served(pkeys)
        return [
            self._lookup(pkey, ekey, served.get(pkey, ()) if pkey else ())
            for pkey, ekey in zip(pkeys, ekeys, strict=True)
        ]

    def lookup(self, pkey: str | None, ekey: str | None) -> HistoryState:
        """History of one encounter from the stores alone (see the class docstring)."""
        served = self._served([pkey]) if pkey is not None else {}
        return self._lookup(pkey, ekey, served.get(pkey, ()) if pkey else ())

    def _lookup(self, pkey: str | None, ekey: str | None, served: Sequence[Any]) -> HistoryState:
        if pkey is None:
            return NO_HISTORY
        hit = self.encounter_index_.get(ekey) if ekey is not None else None
        if hit is not None and hit[0] == pkey:
            return self.store_[pkey][hit[1]]
        state = self.store_.get(pkey, [NO_HISTORY])[-1]
        for served_key, entry, _ in served:
            if served_key == ekey:
                break  # the history before this encounter
            if served_key not in self.encounter_index_:
                state = advance(state, tuple(entry))
        return state

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
    """encounter_id as float (time order) when present, else the row order."""
    if "encounter_id" not in X:
        return np.arange(len(X), dtype="float64")
    return pd.to_numeric(X["encounter_id"], errors="coerce").astype("float64").to_numpy()


def _key_list(X: pd.DataFrame, column: str) -> list[str | None]:
    """A pseudonym column as a list (None where missing or absent)."""
    if column not in X:
        return [None] * len(X)
    return [None if is_missing(v) else str(v) for v in X[column].to_numpy(dtype=object)]
