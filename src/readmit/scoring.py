"""Batch scoring with a registered model: the same fitted pipeline the service uses."""

from __future__ import annotations

import numpy as np
import pandas as pd

from readmit.registry import LoadedModel

OUTPUT_COLUMNS = ("probability", "risk", "model_tag")


def risk_labels(probabilities: np.ndarray, threshold: float) -> np.ndarray:
    """'high' at or above the model's operating threshold, else 'low'."""
    return np.where(probabilities >= threshold, "high", "low")


def score_frame(loaded: LoadedModel, frame: pd.DataFrame) -> pd.DataFrame:
    """Probabilities and risk labels for raw encounters (schema dtypes), in input order.

    `encounter_id` is carried over when present so results can be joined back by the hospital
    system; nothing else from the input is copied.
    """
    probabilities = np.asarray(loaded.model.predict_proba(frame))[:, 1]
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
