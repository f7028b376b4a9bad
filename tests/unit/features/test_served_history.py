"""Served encounters reach the patient-history store: the embedded SQLite store and a real Redis
server on loopback behave the same, a returning patient's served encounters count in served
order, and the served path computes the history training computes (parity)."""

from __future__ import annotations

import pickle
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from readmit import data, pseudonyms
from readmit.features import PatientHistory, served_history
from readmit.features.history import HISTORY_FEATURES, NO_HISTORY, as_of, recorded_before_as_of
from readmit.ops import processes

KEY = b"served-history-test-key"


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 (Debian package, deployments/local/install.sh)."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: run deployments/local/install.sh"
    port = processes.free_port()
    folder = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise AssertionError("redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "sqlite":
        return served_history.open_store(f"sqlite://{tmp_path / 'served.sqlite'}")
    url = request.getfixturevalue("redis_url")
    return served_history.RedisServedHistory(url, prefix=f"test:{tmp_path.name}:")


def test_served_encounters_are_kept_per_patient_in_served_order_once(store: Any) -> None:
    rows = [
        ("p1", "e2", "2026-01-01T10:00:00+00:00", (3, 0, 1, 1, 10)),
        ("p1", "e3", "2026-01-02T10:00:00+00:00", (1, 1, 0, 0, 5)),
        ("p2", "e9", "2026-01-01T11:00:00+00:00", (2, 0, 0, 0, 7)),
    ]
    assert store.add(rows) == 3
    assert store.add(rows[:1]) == 0  # the same encounter again: once
    got = store.entries(["p1", "p2", "nobody"])
    assert [(e, entry) for e, entry, _ in got["p1"]] == [("e2", (3, 0, 1, 1, 10)),
                                                        ("e3", (1, 1, 0, 0, 5))]  # fmt: skip
    assert set(got) == {"p1", "p2"}
    recorded = got["p1"][0][2]
    with as_of(recorded):
        assert recorded_before_as_of(store.entries(["p1"])) == {}
    with as_of(recorded + 1):
        assert len(recorded_before_as_of(store.entries(["p1"]))["p1"]) == 2
    assert len(recorded_before_as_of(store.entries(["p1"]))["p1"]) == 2  # outside: all


def _model_history(frame: pd.DataFrame) -> PatientHistory:
    return PatientHistory(pseudonyms.fingerprint(KEY)).fit(pseudonyms.add_keys(frame, KEY))


def test_a_returning_patients_served_encounters_count_before_retraining(store: Any) -> None:
    history = _model_history(pd.DataFrame({
        "encounter_id": [1, 2], "patient_nbr": [7, 7], "time_in_hospital": [2, 3],
        "number_inpatient": [0, 1], "number_emergency": [0, 0], "admission_type_id": [1, 2],
        "num_medications": [5, 6],
    }))  # fmt: skip
    p7 = pseudonyms.pseudonym(KEY, "patient_nbr", 7)
    e = {i: pseudonyms.pseudonym(KEY, "encounter_id", i) for i in (1, 2, 3, 4)}
    before = history.lookup(p7, e[4])
    assert before[0] == 2  # the two training encounters
    history.attach(store)
    store.add([(p7, e[2], "2026-01-01T00:00:00+00:00", (9, 9, 9, 9, 9)),  # trained on: skipped
               (p7, e[3], "2026-01-02T00:00:00+00:00", (4, 2, 1, 1, 8))])  # fmt: skip
    assert history.lookup(p7, e[3]) == before  # its own history: before it
    after = history.lookup(p7, e[4])  # a later encounter: the served one counts
    assert after[0] == 3 and after[HISTORY_FEATURES.index("hist_prev_days")] == 4
    assert history.lookup(p7, e[1]) == NO_HISTORY  # a training encounter: as trained
    copy = pickle.loads(pickle.dumps(history))
    assert not hasattr(copy, "served_store") and copy.lookup(p7, e[4]) == before


def test_a_failing_store_never_breaks_scoring() -> None:
    class Broken:
        def entries(self, keys: Any) -> Any:
            raise ConnectionError("store down")

    history = _model_history(pd.DataFrame({"encounter_id": [1], "patient_nbr": [7]}))
    p7 = pseudonyms.pseudonym(KEY, "patient_nbr", 7)
    expected = history.lookup(p7, None)
    history.attach(Broken())
    assert history.lookup(p7, None) == expected and history.served_history_errors == 1


def test_served_history_equals_training_history_for_the_same_encounters(
    tmp_path: Path, full_frame: pd.DataFrame
) -> None:
    """Parity: a model trained on the first encounters, its later encounters served and recorded
    one by one, gives each later encounter the history a model trained on everything gives it."""
    ordered = data.in_time_order(full_frame).iloc[:30_000]
    trained, later = ordered.iloc[:20_000], ordered.iloc[20_000:]
    later = later[later["patient_nbr"].isin(trained["patient_nbr"])]  # returning patients
    store = served_history.open_store(f"sqlite://{tmp_path / 'served.sqlite'}")
    served = _model_history(trained).attach(store)
    keyed = pseudonyms.add_keys(later, KEY)
    at = pd.Timestamp("2026-01-01", tz="UTC")
    states = []
    for i, row in enumerate(keyed.itertuples(index=False)):
        states.append(served.lookup(row.patient_key, row.encounter_key))
        entry = served_history.served_rows(
            keyed.iloc[[i]].assign(timestamp=at + pd.Timedelta(seconds=i))
        )
        store.add(entry)  # monitoring records it once the log ships
    reference = _model_history(pd.concat([trained, later])).transform(keyed)
    assert len(later) > 500
    np.testing.assert_array_equal(np.asarray(states), reference[list(HISTORY_FEATURES)].to_numpy())
