"""Real HTTP tests of the bento: a small model is registered, `bentoml build` packs it, and
`bentoml serve` of the built bento runs on a free loopback port for the whole session.

Every server gets its own BENTOML_HOME (`readmit.deploy.start_server`): one `bentoml serve` per
home. The no-model server runs the same bento on an empty home.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from service_helpers import READY_TIMEOUT_S, Served, small_model

from readmit import data, deploy, registry
from readmit.schema import INPUT_COLUMNS
from readmit.settings import get_settings


@pytest.fixture(scope="session")
def train_frame(sample_frame: pd.DataFrame) -> pd.DataFrame:
    """3,000 real encounters the test model is trained on."""
    return data.exclude_died_or_hospice(sample_frame)


@pytest.fixture(scope="session")
def model_tag(train_frame: pd.DataFrame) -> str:
    """The small model, registered (not promoted) in the session's model store."""
    metadata = {
        "threshold": 0.15,
        "label_definition": "<30",
        "metrics": {"roc_auc": 0.61, "pr_auc": 0.17, "brier": 0.1},
        "trained_at": "2026-11-23T00:00:00+00:00",
        "feature_names": list(INPUT_COLUMNS),
    }
    return registry.save_model(small_model(train_frame), metadata, stage="candidate")


@pytest.fixture(scope="session")
def bento_tag(model_tag: str) -> str:
    """`bentoml build` of bentos/readmission with the model packed in (once per session)."""
    return deploy.build_bento(model_tag, get_settings())


@pytest.fixture(scope="session")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Homes, logs and prediction logs of the servers this session starts."""
    return tmp_path_factory.mktemp("serving")


def _log_tail(path: Path) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-30:]) if path.exists() else ""


@pytest.fixture(scope="session")
def served(bento_tag: str, model_tag: str, run_root: Path) -> Iterator[Served]:
    """The session bento served on a free loopback port, ready."""
    run_dir, plogs = run_root / "main", run_root / "prediction_logs"
    port = deploy.free_port()
    proc, _, log_file = deploy.start_server(
        bento_tag, port, run_dir=run_dir, env={"READMIT_PREDICTION_LOG_DIR": str(plogs)}
    )
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
