"""Scoring as served: one path from raw feed rows to probabilities, shared by the service,
batch scoring (`readmit score`), evaluation (registered metrics) and monitoring.

A feed row is scored by the scorer the service uses (`make_scorer`: the per-record fast path,
else the batch pipeline on a frame), one record at a time, under
`features.KNOWN_AT_PREDICTION`. Identifiers are pseudonymised on arrival (`pseudonymised`):
scorers take `patient_key` / `encounter_key`, only to look the patient up in the history store,
and refuse raw identifiers. An outcome column in the input is an error, never a feature.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from readmit import pseudonyms
from readmit.data import coerce_types
from readmit.features import PatientHistory, reject_outcomes
from readmit.schema import ID_COLUMNS, INPUT_COLUMNS

if TYPE_CHECKING:
    from readmit.model.registry import LoadedModel

OUTPUT_COLUMNS = ("probability", "risk", "model_tag")


def risk_labels(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """'high' at or above the model's operating threshold, else 'low'."""
    return np.where(probabilities >= threshold, "high", "low")


def feed_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Raw feed rows (schema dtypes) -> the records a client sends: the contract's input fields
    and the identifiers present (raw, or already pseudonyms: served rows read back from the log),
    None for missing. Outcome columns are refused."""
    reject_outcomes(list(frame.columns))
    present = [c for c in (*ID_COLUMNS, *pseudonyms.KEY_COLUMNS) if c in frame.columns]
    columns = [*present, *INPUT_COLUMNS]
    values = frame.reindex(columns=columns).astype(object)
    return values.where(values.notna(), None).to_dict("records")  # type: ignore[return-value]


def pseudonymised(records: Sequence[Mapping[str, Any]], key: bytes) -> list[dict[str, Any]]:
    """Records as they arrive: raw identifiers replaced by their keyed pseudonyms."""
    return [pseudonyms.pseudonymise_record(record, key) for record in records]


def require_keyed(records: Sequence[Mapping[str, Any]]) -> None:
    """Raise ValueError if a record still carries a raw identifier (not pseudonymised)."""
    for i, record in enumerate(records):
        raw = [c for c in ID_COLUMNS if c in record]
        if raw:
            raise ValueError(
                f"record {i} carries raw identifiers ({', '.join(raw)}): pseudonymise records "
                "on arrival (readmit.serving.scoring.pseudonymised) before scoring"
            )


def records_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Pseudonymised records -> the frame the batch pipeline takes (schema dtypes); the
    pseudonym columns kept when any record carries them."""
    require_keyed(records)
    keys = [c for c in pseudonyms.KEY_COLUMNS if any(r.get(c) is not None for r in records)]
    frame = pd.DataFrame.from_records(list(records), columns=[*INPUT_COLUMNS, *keys])
    return coerce_types(frame)


def history_step(model: Any) -> PatientHistory | None:
    """The model's patient-history step, if it has one."""
    for _, step in getattr(model, "steps", []):
        if isinstance(step, PatientHistory):
            return step
    return None


def attach_served_history(model: Any, uri: str) -> bool:
    """Let the model's history step read the served-history store at `uri`
    (`readmit.features.served_history`); False when the model has no history step."""
    from readmit.features import served_history

    step = history_step(model)
    if step is None:
        return False
    step.attach(served_history.open_store(uri))
    return True


def require_model_key(model: Any, key: bytes) -> None:
    """Refuse a model whose history store was keyed with another key (`KeyMismatchError`)."""
    step = history_step(model)
    pseudonyms.require_same_key(getattr(step, "key_fingerprint", None), key)


class Scorer(Protocol):
    """Probability of the positive class for raw records."""

    def predict_proba_one(self, record: Mapping[str, Any]) -> float: ...

    def predict_proba_many(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray: ...


@dataclass(frozen=True)
class FrameScorer:
    """Scores through the fitted batch pipeline on a frame: exact, but ~20 ms for one row."""

    model: Any

    def predict_proba_one(self, record: Mapping[str, Any]) -> float:
        """Probability for one record."""
        return float(self.predict_proba_many([record])[0])

    def predict_proba_many(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Probabilities for records, in order."""
        return np.asarray(self.model.predict_proba(records_frame(records)))[:, 1]


def single_threaded(model: Any) -> Any:
    """Set `n_jobs=1` on every step that has it (e.g. XGBoost) and return the model.

    Why: a multi-threaded booster on a one-row input spends its time synchronising threads
    (measured: 49 ms -> 20 ms per row with 2 threads -> 1 on 2 cores). A service scales with
    worker processes instead. Probabilities do not depend on the thread count.
    """
    steps = [step for _, step in getattr(model, "steps", [])] or [model]
    for step in steps:
        params = step.get_params(deep=False) if hasattr(step, "get_params") else {}
        if "n_jobs" in params and params["n_jobs"] != 1:
            step.set_params(n_jobs=1)
    return model


def make_scorer(model: Any) -> Scorer:
    """The fastest scorer with batch-pipeline parity: `readmit.serving.fastpath` when it
    compiles this model, else the batch pipeline on a frame (exact, slower)."""
    from readmit.serving import fastpath

    try:
        return fastpath.compile_scorer(model)
    except (TypeError, ValueError, NotImplementedError, AttributeError, KeyError):
        return FrameScorer(model)


def served_probabilities(
    model: Any, frame: pd.DataFrame, scorer: Scorer | None = None, key: bytes | None = None
) -> np.ndarray:
    """Probabilities of raw feed rows exactly as the service would return them: the rows'
    identifiers pseudonymised with `key` (default: the settings' key) on arrival.

    Raises:
        OutcomeInInputError: the frame carries an outcome column (drop it first: evaluation
            keeps its labels apart from what it scores).
        KeyMismatchError: the model was keyed with another pseudonym key.
    """
    if key is None:
        from readmit.settings import get_settings

        key = get_settings().pseudonym_key_bytes
    require_model_key(model, key)
    records = pseudonymised(feed_records(frame), key)
    if not records:
        return np.zeros(0, dtype=np.float64)
    scorer = scorer or make_scorer(model)
    return np.asarray(scorer.predict_proba_many(records), dtype=np.float64)


def score_frame(loaded: LoadedModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Probabilities and risk labels for raw feed rows (schema dtypes), in input order.

    `encounter_id` is carried over when present so results can be joined back by the hospital
    system; nothing else from the input is copied.
    """
    probabilities = served_probabilities(loaded.model, frame)
    out = pd.DataFrame(
        {
            "probability": probabilities,
            "risk": risk_labels(probabilities, float(loaded.metadata["threshold"])),
            "model_tag": loaded.tag,
        }
    )
    if "encounter_id" in frame:
        out.insert(0, "encounter_id", frame["encounter_id"].to_numpy())
    return out
