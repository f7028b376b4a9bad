"""The served bento's prediction log on a real S3 store (SeaweedFS on loopback), read back with
monitoring's own reader (`readmit.monitoring.served.list_chunks` / `read_chunks`).

The bento is the small test model's (`stack_helpers.small_bento`), served by `bentoml serve`
with READMIT_PREDICTION_LOG_URI on the session's bucket and the store's AWS_* credentials in its
environment, as a pod gets them. Requests are real feed rows with the data set's own
`encounter_id` and `patient_nbr`: in the store there must be one row per answered encounter,
keyed by the pseudonyms the service's key gives, with the probability the client got, and no raw
identifier anywhere in a chunk. A SIGTERM in the middle of traffic (as Kubernetes stops a pod)
must lose no answered row either: with a 60 s flush interval only the shutdown hook can have
shipped them.
"""

from __future__ import annotations

import gzip
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import stack_helpers as sh

from readmit import data, pseudonyms, storage
from readmit.layout import StoreLayout
from readmit.monitoring import served as served_log
from readmit.monitoring import windows
from readmit.ops import deploy
from readmit.settings import get_settings

pytestmark = pytest.mark.integration

FLUSH_S = 1.0
WAIT_FLUSHES = 5
"""At most this many flush intervals from the last answer to every row being in the store."""
SINGLES, BATCHES, BATCH_ROWS = 40, 2, 100
RAW_ID_COLUMNS = ("encounter_id", "patient_nbr")
SIGTERM_FIRST_ID = 900_000_001
"""Encounter ids of the SIGTERM traffic: 9 digits, above the data set's, so none is ambiguous."""
helpers = sh.service_helpers()  # tests/service/service_helpers.py


@pytest.fixture(scope="module")
def feed_bodies(full_frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Raw feed rows as a hospital system sends them, with the data set's own identifiers.

    Rows whose identifiers have at least 6 digits, so that a raw id could not be mistaken for a
    feature value (diagnosis codes such as "135", counts) in the chunks' bytes.
    """
    later = data.in_time_order(full_frame).iloc[60_000:62_000]
    later = later[(later["encounter_id"] >= 100_000) & (later["patient_nbr"] >= 100_000)]
    rows = later.head(SINGLES + BATCHES * BATCH_ROWS)
    return [
        {**helpers.encounter_json(row), "encounter_id": int(row["encounter_id"])}
        for _, row in rows.iterrows()
    ]


@contextmanager
def bento_on_s3(
    full_frame: pd.DataFrame, s3_env: dict[str, str], log_uri: str, run_dir: Path, flush_s: float
) -> Iterator[tuple[str, int]]:
    """The small test bento served with its prediction log on S3; (URL, PID) once ready."""
    _, bento_tag = sh.small_bento(full_frame)
    env = {
        **s3_env,
        "READMIT_PREDICTION_LOG_URI": log_uri,
        "READMIT_LOG_FLUSH_SECONDS": str(flush_s),
    }
    port = deploy.free_port()
    proc, _, log_file = deploy.start_server(bento_tag, port, run_dir=run_dir, env=env)
    url = f"http://{deploy.HOST}:{port}"
    try:
        ok, reason = deploy.wait_ready(url, proc, sh.BENTO_READY_TIMEOUT_S)
        assert ok, f"{reason}\n{log_file.read_text(errors='replace')[-3000:]}"
        yield url, proc.pid
    finally:
        deploy.stop_server(proc.pid)  # a no-op when a test stopped it already


def logged_rows(log_uri: str, bad_dir: str) -> pd.DataFrame:
    """Every row in the store, read as monitoring reads it; no chunk may be set aside."""
    good, bad = served_log.read_chunks(served_log.list_chunks(log_uri), bad_dir)
    assert bad == [], bad
    assert good, f"no chunk below {log_uri}"
    return pd.concat([frame for _, frame in good], ignore_index=True)


def assert_no_raw_identifier(log_uri: str, raw_ids: set[int]) -> None:
    """Decompressed, no chunk names a raw id column or holds a raw id as a JSON value.

    A raw id would stand alone between JSON delimiters; digits inside a pseudonym (hex), a
    probability or a timestamp's fraction touch letters, digits or a dot and are not matches.
    """
    chunks = served_log.list_chunks(log_uri)
    assert chunks
    for chunk in chunks:
        text = gzip.decompress(storage.read_bytes(chunk.url)).decode()
        for column in RAW_ID_COLUMNS:
            assert column not in text, f"{chunk.name} names {column}"
        tokens = set(re.findall(r"(?<![0-9A-Za-z.])[0-9]+(?![0-9A-Za-z.])", text))
        leaked = tokens & {str(i) for i in raw_ids}
        assert not leaked, f"{chunk.name} holds raw identifiers {sorted(leaked)[:5]}"


def test_answered_rows_are_in_s3_once_pseudonymised_with_their_probability(
    full_frame: pd.DataFrame,
    s3_server: Any,
    s3_prefix: str,
    feed_bodies: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    log_uri = f"{s3_prefix}/prediction_logs"
    answered: dict[int, float] = {}  # encounter_id -> probability the client got
    with (
        bento_on_s3(full_frame, s3_server.env, log_uri, tmp_path, FLUSH_S) as (url, _),
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        for body in feed_bodies[:SINGLES]:
            resp = client.post("/predict", json=body)
            assert resp.status_code == 200, resp.text
            answered[body["encounter_id"]] = resp.json()["probability"]
        for k in range(BATCHES):
            batch = feed_bodies[SINGLES + k * BATCH_ROWS : SINGLES + (k + 1) * BATCH_ROWS]
            resp = client.post("/predict_batch", json={"encounters": batch})
            assert resp.status_code == 200, resp.text
            for body, prediction in zip(batch, resp.json()["predictions"], strict=True):
                answered[body["encounter_id"]] = prediction["probability"]
        deadline = time.monotonic() + WAIT_FLUSHES * FLUSH_S
        while len(helpers.shipped_rows(log_uri)) < len(answered) and time.monotonic() < deadline:
            time.sleep(0.2)
        # read while the server still runs: what a monitoring run would see by then
        frame = logged_rows(log_uri, f"{s3_prefix}/bad_chunks")

    key = get_settings().pseudonym_key_bytes
    expected = {pseudonyms.pseudonym(key, "encounter_id", e): p for e, p in answered.items()}
    patient_of = {
        pseudonyms.pseudonym(key, "encounter_id", b["encounter_id"]): pseudonyms.pseudonym(
            key, "patient_nbr", b["patient_nbr"]
        )
        for b in feed_bodies
    }
    assert len(answered) == len(feed_bodies) == SINGLES + BATCHES * BATCH_ROWS
    twice = {k: n for k, n in Counter(frame["encounter_key"]).items() if n > 1}
    assert not twice, f"{len(twice)} rows logged more than once"
    assert len(frame) == len(expected) and set(frame["encounter_key"]) == set(expected)
    logged = dict(zip(frame["encounter_key"], frame["probability"], strict=True))
    assert logged == expected  # exactly the answered float, not an approximation
    assert dict(zip(frame["encounter_key"], frame["patient_key"], strict=True)) == patient_of
    assert not set(RAW_ID_COLUMNS) & set(frame.columns)
    raw_ids = {b[c] for b in feed_bodies for c in RAW_ID_COLUMNS}
    assert_no_raw_identifier(log_uri, raw_ids)

    # Monitoring's own reading step, on the same S3 store: windows, pieces and served history.
    store = StoreLayout(f"{s3_prefix}/store")
    read, state = windows.read_new_chunks(
        store, log_uri, {}, model=None, window=timedelta(hours=1),
        grace=timedelta(minutes=10), skew_rows=0,
        store_uri=f"sqlite://{tmp_path / 'served.sqlite'}",
    )  # fmt: skip
    assert read.rows == len(expected) and not read.bad
    stored = pd.concat(
        [windows.read_served(bases) for bases in windows.list_windows(store).values()]
    )
    assert set(stored["encounter_key"]) == set(expected)
    again, _ = windows.read_new_chunks(
        store, log_uri, state, model=None, window=timedelta(hours=1),
        grace=timedelta(minutes=10), skew_rows=0,
    )  # fmt: skip
    assert again.rows == 0  # each chunk is read once


def test_a_sigterm_in_the_middle_of_traffic_loses_no_row_on_s3(
    full_frame: pd.DataFrame,
    s3_server: Any,
    s3_prefix: str,
    feed_bodies: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    log_uri = f"{s3_prefix}/prediction_logs"
    with bento_on_s3(full_frame, s3_server.env, log_uri, tmp_path, flush_s=60) as (url, pid):
        answered = helpers.traffic_then_sigterm(
            url, pid, feed_bodies[0], min_answered=300, first_id=SIGTERM_FIRST_ID
        )
    assert len(answered) >= 300

    frame = logged_rows(log_uri, f"{s3_prefix}/bad_chunks")
    key = get_settings().pseudonym_key_bytes
    expected = {pseudonyms.pseudonym(key, "encounter_id", e): p for e, p in answered.items()}
    logged = Counter(frame["encounter_key"])
    missing = set(expected) - set(logged)
    assert not missing, f"{len(missing)} of {len(expected)} answered rows are not in S3"
    assert max(logged.values()) == 1  # no row twice
    probability = dict(zip(frame["encounter_key"], frame["probability"], strict=True))
    assert {k: probability[k] for k in expected} == expected
    assert_no_raw_identifier(log_uri, set(answered) | {feed_bodies[0]["patient_nbr"]})
