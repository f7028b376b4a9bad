"""Real HTTP tests of the bento: a small model is registered, `bentoml build` packs it, and
`bentoml serve` of the built bento runs on a free loopback port for the whole session.

Every server gets its own BENTOML_HOME (`readmit.ops.deploy.start_server`): one `bentoml serve` per
home. The no-model server runs the same bento on an empty home.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from service_helpers import READY_TIMEOUT_S, Served, small_model

from readmit import data
from readmit.model import evaluate, registry
from readmit.ops import deploy
from readmit.schema import INPUT_COLUMNS
from readmit.settings import get_settings


@pytest.fixture(scope="session")
def feed_split(sample_frame: pd.DataFrame) -> data.FeedSplit:
    """3,000 real feed rows split by patient, as the training flow splits."""
    return data.split_feed(
        sample_frame, window="all", reference_fraction=0.6, holdout_fraction=0.2, seed=42
    )


@pytest.fixture(scope="session")
def train_frame(feed_split: data.FeedSplit) -> pd.DataFrame:
    """The cohort rows of the training patients: what the test model is trained on."""
    return feed_split.train


@pytest.fixture(scope="session")
def model_tag(train_frame: pd.DataFrame, feed_split: data.FeedSplit) -> str:
    """The small model, registered (not promoted) with its served-path holdout metrics."""
    model = small_model(train_frame)
    evaluation = evaluate.evaluate_model(model, feed_split.holdout, threshold=0.15)
    metadata = {
        "threshold": 0.15,
        "label_definition": "<30",
        "metrics": evaluation.metrics,
        "trained_at": "2026-11-23T00:00:00+00:00",
        "feature_names": list(INPUT_COLUMNS),
    }
    return registry.save_model(model, metadata, stage="candidate")


@pytest.fixture(scope="session")
def bento_tag(model_tag: str) -> str:
    """`bentoml build` of bentos/readmission with the model packed in (once per session)."""
    return deploy.build_bento(model_tag, get_settings())


@pytest.fixture(scope="session")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Homes, logs and prediction logs of the servers this session starts."""
    return tmp_path_factory.mktemp("serving")


def served_history_uri(run_root: Path) -> str:
    """The session bento's served-history store (its own, not the session artifact store's)."""
    return f"sqlite://{run_root / 'served_history.sqlite'}"


def _log_tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:]) if path.exists() else ""


@pytest.fixture(scope="session")
def served(bento_tag: str, model_tag: str, run_root: Path) -> Iterator[Served]:
    """The session bento served on a free loopback port, ready."""
    run_dir, plogs = run_root / "main", run_root / "prediction_logs"
    port = deploy.free_port()
    env = {
        "READMIT_PREDICTION_LOG_URI": str(plogs),
        # a history store of its own: served encounters recorded by other tests' monitoring
        # runs in the session's store would change these patients' history
        "READMIT_HISTORY_STORE": served_history_uri(run_root),
    }
    proc, _, log_file = deploy.start_server(bento_tag, port, run_dir=run_dir, env=env)
    url = f"http://{deploy.HOST}:{port}"
    try:
        ok, reason = deploy.wait_ready(url, proc, READY_TIMEOUT_S)
        assert ok, f"{reason}\n{_log_tail(log_file)}"
        yield Served(url, proc.pid, log_file, plogs, bento_tag, model_tag)
    finally:
        deploy.stop_server(proc.pid)


@pytest.fixture(scope="session")
def client(served: Served) -> Iterator[httpx.Client]:
    """HTTP client bound to the served bento."""
    with httpx.Client(base_url=served.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def holdout_rows(full_frame: pd.DataFrame, train_frame: pd.DataFrame) -> pd.DataFrame:
    """200 later encounters of distinct patients, none in the training rows."""
    later = data.in_time_order(full_frame).iloc[60_000:62_000]
    later = later[~later["encounter_id"].isin(train_frame["encounter_id"])]
    return later.drop_duplicates("patient_nbr").head(200).reset_index(drop=True)
