"""Helpers shared by the service tests (imported by conftest and test modules) and by the
integration tests (`stack_helpers.service_helpers()` imports this file by path)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from readmit import storage
from readmit.monitoring import served as served_log
from readmit.ops import deploy
from readmit.schema import INPUT_COLUMNS
from readmit.serving import prediction_log

READY_TIMEOUT_S = 150


def small_model(train_frame: pd.DataFrame, key: bytes | None = None, **booster: Any) -> Any:
    """The production pipeline's transformers with a small XGBoost, keyed with the settings' key
    (the key the served bento runs with) unless `key` is given: fitted in about a second.
    `booster` overrides the XGBoost parameters (a challenger that scores differently)."""
    from sklearn.pipeline import Pipeline
    from xgboost import XGBClassifier

    from readmit import pseudonyms
    from readmit.features import EncounterFeatures, FeatureEncoder, PatientHistory, make_label
    from readmit.settings import get_settings

    key = key or get_settings().pseudonym_key_bytes
    params = {"n_estimators": 40, "max_depth": 3, "n_jobs": 1, "random_state": 0, **booster}
    pipeline = Pipeline(
        [
            ("history", PatientHistory(pseudonyms.fingerprint(key))),
            ("features", EncounterFeatures()),
            ("encode", FeatureEncoder(min_frequency=20)),
            ("model", XGBClassifier(**params)),
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


def shipped_rows(log_uri: str | Path) -> list[dict[str, Any]]:
    """Every row the service shipped below `log_uri` (a folder or an s3:// URL), chunk by chunk
    in time order."""
    return [
        row
        for chunk in served_log.list_chunks(str(log_uri))
        for row in prediction_log.decode_chunk(storage.read_bytes(chunk.url))
    ]


def _post_distinct_encounters(
    url: str, body: Mapping[str, Any], ids: range, stop: threading.Event, answered: dict[int, float]
) -> None:
    """One client: `body` with each encounter_id of `ids` in turn, until `stop` is set or the
    server stops answering; records the probability of every 200 by encounter_id."""
    with httpx.Client(base_url=url, timeout=10) as client:
        for encounter_id in ids:
            if stop.is_set():
                return
            try:
                resp = client.post("/predict", json={**body, "encounter_id": encounter_id})
            except httpx.HTTPError:
                return
            if resp.status_code == 200:
                answered[encounter_id] = resp.json()["probability"]


def traffic_then_sigterm(
    url: str,
    pid: int,
    body: Mapping[str, Any],
    *,
    clients: int = 4,
    min_answered: int = 300,
    timeout_s: float = 30.0,
    first_id: int = 1,
) -> dict[int, float]:
    """Clients post `body` with distinct encounter ids (from `first_id` on); once
    `min_answered` are answered (or after `timeout_s`) the server is stopped with SIGTERM
    (`deploy.stop_server`, as Kubernetes and `readmit.ops.deploy` stop it) while they keep
    posting. Returns encounter_id -> probability of every request that got a 200."""
    answered: dict[int, float] = {}
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=_post_distinct_encounters,
            args=(url, body, range(first_id + k, first_id + k + 100_000, clients), stop, answered),
        )
        for k in range(clients)
    ]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while len(answered) < min_answered and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        deploy.stop_server(pid)
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    return dict(answered)
