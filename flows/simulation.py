"""Simulation flow: replay encounters as batches into the inbox (and through the service), with an
optional seeded drift episode; each batch's labels arrive `label_delay` batches later.

Sources:
- "holdout" (default): patient-disjoint batches from the reference period that the model never
  saw. Without injected drift they are clean, so the injected episode is what monitoring sees.
- "future": the encounters after the reference window, in encounter_id order. The real data
  drifts on its own there (coding changes: e.g. up to 16 diagnoses recorded instead of 9 from
  2008 on), so every batch is already drifted against a reference-window model.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from readmit import data, storage
from readmit.data import inbox
from readmit.layout import StoreLayout
from readmit.monitoring import drift, simulation
from readmit.settings import get_settings

Source = Literal["holdout", "future"]


@task(cache_policy=NO_CACHE)
def plan_batches(source: Source, n_batches: int, batch_size: int, seed: int) -> list[Any]:
    """The batches to replay, before drift injection."""
    settings = get_settings()
    frame = data.read_encounters(settings.data_uri, settings.data_sha256).frame
    if source == "future":
        return simulation.future_batches(frame, settings.reference_fraction, batch_size)[:n_batches]
    unseen = data.split_feed(
        frame,
        window="reference",
        reference_fraction=settings.reference_fraction,
        holdout_fraction=0.2,
        seed=settings.seed,
    ).holdout_feed
    return drift.sample_batches(unseen, n_batches, batch_size, seed=seed)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def send_to_service(service_url: str, frame: Any, max_batch: int) -> int:
    """POST a batch to the service's /predict_batch in chunks; returns how many were scored."""
    records = simulation.service_records(frame)
    scored = 0
    with httpx.Client(base_url=service_url, timeout=60) as client:
        for chunk in simulation.chunks(records, max_batch):
            response = client.post("/predict_batch", json={"encounters": chunk})
            response.raise_for_status()
            scored += len(chunk)
    return scored


@flow(name="simulation", log_prints=True)
def simulation_flow(
    n_batches: int = 6,
    batch_size: int = 2000,
    source: Source = "holdout",
    scenario: str | None = "covariate_shift",
    strength: drift.Strength = "strong",
    mode: drift.Mode = "sudden",
    drift_start: int = 3,
    label_delay: int = 1,
    first_batch: int | None = None,
    service_url: str | None = None,
    seed: int = 7,
) -> dict[str, Any]:
    """Publish `n_batches` batches to the inbox, labels one delay later, drift from `drift_start`.

    Args:
        n_batches: How many batches to replay.
        batch_size: Encounters per batch.
        source: "holdout" (clean, reference period) or "future" (real later encounters).
        scenario: Drift scenario (see readmit.monitoring.drift.SCENARIOS) or None for no drift.
        strength: weak, moderate or strong.
        mode: sudden or gradual.
        drift_start: Index of the first drifted batch within this replay.
        label_delay: Labels of batch k arrive when batch k + label_delay is published; the
            last `label_delay` batches' labels arrive with a later replay.
        first_batch: Number of the first batch id; default continues after the last one.
        service_url: If set, every batch is also scored by the service (its prediction logs).
        seed: Seed of the drift injection and of the batch sampling.
    """
    settings, logger = get_settings(), get_run_logger()
    batches = plan_batches(source, n_batches, batch_size, seed)
    episode = simulation.DriftEpisode(scenario, strength, mode, drift_start) if scenario else None
    batches = simulation.apply_episode(batches, episode, seed)
    start = first_batch if first_batch is not None else next_batch_number(settings.artifacts_uri)
    ids = [inbox.batch_id(start + i) for i in range(len(batches))]
    published: list[str] = []
    for i, (batch_id, batch) in enumerate(zip(ids, batches, strict=True)):
        features, _ = inbox.split_labels(batch)
        inbox.publish_batch(settings.artifacts_uri, batch_id, features)
        if service_url:
            send_to_service(service_url, features, settings.max_batch_size)
        if i >= label_delay:
            late = i - label_delay
            inbox.publish_labels(
                settings.artifacts_uri, ids[late], inbox.split_labels(batches[late])[1]
            )
        published.append(batch_id)
        drifted = episode is not None and i >= episode.start
        logger.info(
            "published %s (%d encounters%s)",
            batch_id,
            len(batch),
            f", drift {scenario}/{strength}" if drifted else "",
        )
    return {
        "batches": published,
        "episode": episode.to_dict() if episode else None,
        "source": source,
    }


def next_batch_number(artifacts_uri: str) -> int:
    """One after the highest batch number seen in the inbox or the processed batches."""
    layout = StoreLayout(artifacts_uri)
    names = [
        u.rsplit("/", 1)[1]
        for folder in (layout.inbox_dir(), layout.processed_dir())
        for u in storage.list_files(folder, "batch-*.csv")
    ]
    numbers = [int(n.removeprefix("batch-").removesuffix(".csv")) for n in names]
    return max(numbers, default=0) + 1


if __name__ == "__main__":
    simulation_flow()
