"""Drill: a full disk in the prediction-log folder. The service keeps answering, reports the
refused chunks and the rows it holds on /metrics (what `ReadmitPredictionLogShippingFailing`
alerts on), and once there is room again ships every row it answered: nothing lost, nothing
duplicated, no partial chunk visible.

The folder is a 256 KiB tmpfs (mounting needs root or CAP_SYS_ADMIN), filled with a filler file,
under a real `bentoml serve` of the session bento; the requests are real feed rows.
"""

from __future__ import annotations

import errno
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from service_helpers import READY_TIMEOUT_S, encounter_json, shipped_rows

from readmit import pseudonyms
from readmit.monitoring import served as served_log
from readmit.ops import deploy
from readmit.settings import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.drill("full_disk_prediction_log")]

FLUSH_SECONDS = 0.5
FAILURES = "readmit_prediction_log_ship_failures_total"
QUEUED = "readmit_prediction_log_queued_rows"
LOST = "readmit_prediction_log_rows_lost_total"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs, unmounted afterwards."""
    mount_point = tmp_path / "prediction_logs"
    mount_point.mkdir()
    cmd = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount_point)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {proc.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)


@pytest.fixture
def server_on_small_disk(
    bento_tag: str, run_root: Path, small_disk: Path, tmp_path: Path
) -> Iterator[str]:
    """The session bento shipping its prediction log to the small disk every 0.5 s; its URL."""
    port = deploy.free_port()
    env = {
        "READMIT_PREDICTION_LOG_URI": str(small_disk),
        "READMIT_LOG_FLUSH_SECONDS": str(FLUSH_SECONDS),
        "READMIT_HISTORY_STORE": f"sqlite://{tmp_path / 'served_history.sqlite'}",
    }
    proc, _, log_file = deploy.start_server(
        bento_tag, port, run_dir=run_root / "full-disk", env=env
    )
    url = f"http://{deploy.HOST}:{port}"
    try:
        ok, reason = deploy.wait_ready(url, proc, READY_TIMEOUT_S)
        assert ok, f"{reason}\n{log_file.read_text(errors='replace')[-3000:]}"
        yield url
    finally:
        deploy.stop_server(proc.pid)


def fill(folder: Path) -> Path:
    """Write a filler file until the disk refuses (ENOSPC); returns it."""
    filler = folder / "filler.bin"
    block = b"\0" * 4096
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(block)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return filler


def metric(client: httpx.Client, name: str) -> float:
    """One sample of /metrics, summed over its series (0 when absent)."""
    text = client.get("/metrics").text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    )


def wait_for(what: str, check: Callable[[], Any], timeout_s: float) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        assert time.monotonic() < deadline, f"not within {timeout_s:.0f} s: {what}"
        time.sleep(0.1)
    return value


def test_a_full_disk_loses_no_prediction_and_shows_on_metrics(
    server_on_small_disk: str, small_disk: Path, holdout_rows: pd.DataFrame
) -> None:
    key = get_settings().pseudonym_key_bytes
    bodies = [  # raw feed rows, with both identifiers
        {**encounter_json(row), "encounter_id": int(row["encounter_id"])}
        for _, row in holdout_rows.iterrows()
    ]
    n = len(bodies)
    expected = sorted(
        str(pseudonyms.pseudonym(key, "encounter_id", b["encounter_id"])) for b in bodies
    )
    assert n == 200 and len(set(expected)) == n
    filler = fill(small_disk)

    with httpx.Client(base_url=server_on_small_disk, timeout=30) as client:
        codes = [client.post("/predict", json=body).status_code for body in bodies]
        assert codes == [200] * n  # the service keeps answering
        assert client.get("/readyz").status_code == 200

        # Every row is held (the gauge is summed over the workers), the refusals are counted.
        wait_for(f"{QUEUED} == {n}", lambda: metric(client, QUEUED) == n, 20)
        assert metric(client, FAILURES) > 0 and metric(client, LOST) == 0
        assert served_log.list_chunks(str(small_disk)) == []  # nothing half-written is visible

        filler.unlink()  # room again
        rows = wait_for(
            f"all {n} rows shipped",
            lambda: (found := shipped_rows(small_disk)) and len(found) >= n and found,
            20,
        )
        assert sorted(r["encounter_key"] for r in rows) == expected  # each once: none lost
        assert {r["model_tag"] for r in rows} == {client.get("/model").json()["model_tag"]}
        wait_for(f"{QUEUED} == 0", lambda: metric(client, QUEUED) == 0, 10)
        failures = metric(client, FAILURES)
        time.sleep(4 * FLUSH_SECONDS)
        assert metric(client, FAILURES) == failures  # shipping works again
        assert metric(client, LOST) == 0
    leftovers = sorted(
        p.relative_to(small_disk).as_posix()
        for p in small_disk.rglob("*")
        if p.is_file() and not p.name.endswith(".jsonl.gz")
    )
    print(f"full-disk drill: {failures:.0f} refused chunks; files besides chunks: {leftovers}")
    assert leftovers == []  # a refused write leaves no half-written temporary behind
