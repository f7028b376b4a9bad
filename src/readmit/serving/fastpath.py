"""Per-record scoring compiled from a fitted `ReadmissionModel`, for single-digit-ms serving.

Pushing a one-row DataFrame through the batch pipeline costs ~20 ms (pandas and encoder
overhead); the booster itself needs well under 1 ms. `compile_scorer` walks the FITTED pipeline
and keeps references to its own steps, calling their per-record twins (`PatientHistory.history`,
`EncounterFeatures.transform_record`, `FeatureEncoder.encode_record`): the same fitted tables
(categories, patient-history store, column order), no second copy of any definition. The design
matrix is dense in both paths, so the sparse-zeros-read-as-missing trap of XGBoost cannot occur.
A parity test compares this path with `model.predict_proba` on real rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from readmit.features import (
    HISTORY_FEATURES,
    EncounterFeatures,
    FeatureEncoder,
    PatientHistory,
)
from readmit.schema import COLUMN_BY_NAME, INPUT_COLUMNS

REQUIRED_FIELDS = tuple(c for c in INPUT_COLUMNS if not COLUMN_BY_NAME[c].nullable)
"""Fields a record must carry (value may not be omitted); nullable ones default to None."""


class RecordScorer:
    """Scores raw encounter dicts (data-set field names, None = missing) without pandas.

    Records may carry `patient_key` / `encounter_key` (pseudonymised on arrival, never raw
    identifiers): history from the model's patient-history store (unknown patient = no
    history). Each record is scored on its own (`features.KNOWN_AT_PREDICTION`): other records
    of a batch never change its probability.
    """

    def __init__(
        self,
        history: PatientHistory,
        encounter: EncounterFeatures,
        encoder: FeatureEncoder,
        classifier: Any,
    ) -> None:
        self.history = history
        self.encounter = encounter
        self.encoder = encoder
        self.classifier = classifier
        self._booster = _booster_of(classifier)

    def features(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Dense float32 design matrix of the records (rows in input order)."""
        for i, record in enumerate(records):
            absent = [f for f in REQUIRED_FIELDS if f not in record]
            if absent:
                raise ValueError(f"record {i}: missing required fields: {', '.join(absent)}")
            if "patient_nbr" in record or "encounter_id" in record:
                raise ValueError(
                    f"record {i} carries raw identifiers: pseudonymise records on arrival "
                    "(readmit.serving.scoring.pseudonymised) before scoring"
                )
        keys = [self.history.record_keys(record) for record in records]
        states = self.history.history([k[0] for k in keys], [k[1] for k in keys])
        rows = []
        for record, state in zip(records, states, strict=True):
            merged = {**record, **dict(zip(HISTORY_FEATURES, state, strict=True))}
            rows.append(self.encoder.encode_record(self.encounter.transform_record(merged)))
        return np.vstack(rows)

    def predict_proba_many(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Probability of the positive class for each record (each one independent of the rest)."""
        if not records:
            return np.zeros(0, dtype=np.float64)
        matrix = self.features(records)
        if self._booster is not None:
            return np.asarray(self._booster.inplace_predict(matrix), dtype=np.float64)
        return np.asarray(self.classifier.predict_proba(matrix))[:, 1].astype(np.float64)

    def predict_proba_one(self, record: Mapping[str, Any]) -> float:
        """Probability of the positive class for one record."""
        return float(self.predict_proba_many([record])[0])


def _booster_of(classifier: Any) -> Any:
    """A single-threaded copy of an XGBoost classifier's booster; None for other classifiers.

    One thread: a single row gains nothing from OpenMP, and idle spinning threads hurt
    latency on a busy 2-core machine. Predictions do not depend on the thread count.
    """
    get_booster = getattr(classifier, "get_booster", None)
    if get_booster is None:
        return None
    booster = get_booster().copy()
    booster.set_param({"nthread": 1})
    return booster


def compile_scorer(model: Any) -> RecordScorer:
    """Build a `RecordScorer` from a fitted `ReadmissionModel` (history, features, encoder, ...).

    The steps after the encoder are the classifier: an XGBoost model is called through its
    booster (`inplace_predict`, exactly what `XGBClassifier.predict_proba` does); any other tail
    (the logistic-regression baseline) is called as the fitted sklearn steps it is.

    Raises:
        TypeError: the model is not a pipeline of the expected fitted steps.
    """
    steps = [step for _, step in getattr(model, "steps", [])]
    kinds = (PatientHistory, EncounterFeatures, FeatureEncoder)
    if len(steps) < 4 or not all(isinstance(s, k) for s, k in zip(steps, kinds, strict=False)):
        raise TypeError(
            "compile_scorer needs a fitted ReadmissionModel: PatientHistory, EncounterFeatures, "
            f"FeatureEncoder, then the classifier; got {[type(s).__name__ for s in steps]}"
        )
    tail = steps[3] if len(steps) == 4 else model[3:]
    return RecordScorer(steps[0], steps[1], steps[2], tail)
