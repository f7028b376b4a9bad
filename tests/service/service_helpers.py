"""Helpers shared by the service tests (imported by conftest and test modules)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from readmit.schema import INPUT_COLUMNS

READY_TIMEOUT_S = 150


def small_model(train_frame: pd.DataFrame) -> Any:
    """The production pipeline's transformers with a small XGBoost, keyed with the settings' key
    (the key the served bento runs with): fitted in about a second."""
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from readmit import pseudonyms
    from readmit.features import EncounterFeatures, FeatureEncoder, PatientHistory, make_label
    from readmit.settings import get_settings

    key = get_settings().pseudonym_key_bytes
    pipeline = Pipeline(
        [
            ("history", PatientHistory(pseudonyms.fingerprint(key))),
            ("features", EncounterFeatures()),
            ("encode", FeatureEncoder(min_frequency=20)),
            ("model", XGBClassifier(n_estimators=40, max_depth=3, n_jobs=1, random_state=0)),
        ]
    )
    keyed = pseudonyms.add_keys(train_frame, key)
    return pipeline.fit(keyed, make_label(train_frame, "<30"))


def encounter_json(row: pd.Series, with_patient: bool = True) -> dict[str, Any]:
    """A frame row as the JSON a hospital system sends (data-set names, null = missing)."""
    out: dict[str, Any] = {}
    for name in INPUT_COLUMNS:
        value = row[name]
        out[name] = (
            None if pd.isna(value) else (int(value) if isinstance(value, np.integer) else value)
        )
    if with_patient:
        out["patient_nbr"] = int(row["patient_nbr"])
    return json.loads(json.dumps(out, default=int))


@dataclass(frozen=True)
class Served:
    """A running `bentoml serve` of the session bento."""

    url: str
    pid: int
    log_file: Path
    prediction_logs: Path
    bento_tag: str
    model_tag: str
