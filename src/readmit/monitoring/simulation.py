"""Replay of later encounters as batches, with seeded drift and late labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from readmit import data, storage
from readmit.layout import chunk_relpath
from readmit.monitoring import drift
from readmit.schema import OUTCOME_COLUMNS
from readmit.serving import logged_rows, scoring
from readmit.serving.prediction_log import encode_chunk
from readmit.settings import get_settings


@dataclass(frozen=True)
class DriftEpisode:
    """Which drift to inject, from which replayed batch on, how strong and how fast."""

    scenario: str
    strength: drift.Strength = "strong"
    mode: drift.Mode = "sudden"
    start: int = 2  # index (0-based, within this replay) of the first drifted batch
    ramp_batches: int = 3

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for artifacts and logs."""
        return asdict(self)


def future_batches(
    frame: pd.DataFrame, reference_fraction: float, batch_size: int
) -> list[pd.DataFrame]:
    """Feed rows after the reference window (every disposition), in encounter_id order, cut
    into batches."""
    return data.reference_and_batches(frame, reference_fraction, batch_size)[1]


def apply_episode(
    batches: list[pd.DataFrame], episode: DriftEpisode | None, seed: int
) -> list[pd.DataFrame]:
    """The replay with the episode injected from `episode.start` on (unchanged before it)."""
    if episode is None or episode.start >= len(batches):
        return batches
    drifted = drift.inject_sequence(
        batches[episode.start :],
        episode.scenario,
        episode.strength,
        mode=episode.mode,
        ramp_batches=episode.ramp_batches,
        seed=seed,
    )
    return batches[: episode.start] + drifted


def service_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON records for the service: feed rows as a hospital sends them (identifiers kept,
    outcomes dropped: they arrive later, through the labels)."""
    return scoring.feed_records(frame.drop(columns=list(OUTCOME_COLUMNS), errors="ignore"))


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    """Consecutive chunks of at most `size` items (the service's batch limit)."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def ship_as_served(
    model: Any,
    feed: pd.DataFrame,
    log_uri: str,
    at: datetime,
    *,
    model_tag: str,
    threshold: float,
    seq: int = 1,
) -> tuple[str, np.ndarray]:
    """Score feed rows on the served path and ship them as ONE prediction-log chunk stamped
    `at`, exactly as a service worker would (pseudonyms, features, probability, risk, model):
    for backtests and benchmarks of monitoring at volumes no test should push through HTTP.
    Returns the chunk URL and the probabilities."""
    key = get_settings().pseudonym_key_bytes
    records = scoring.pseudonymised(scoring.feed_records(feed), key)
    p = np.asarray(scoring.make_scorer(model).predict_proba_many(records), dtype=float)
    risks = scoring.risk_labels(p, threshold).tolist()
    rows = logged_rows(records, p.tolist(), risks, model_tag, at.isoformat())
    url = f"{log_uri.rstrip('/')}/{chunk_relpath(at, 'replay-w0-p0', seq)}"
    storage.write_bytes(url, encode_chunk(rows))
    return url, p
