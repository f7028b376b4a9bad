"""Test-wide isolation: every test process gets its own model store and artifact store.

BentoML reads BENTOML_HOME once per process, so it is set here, before anything imports bentoml.
Tests that need separate registries use distinct model names (`fresh_settings`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

_SESSION_ROOT = Path(tempfile.mkdtemp(prefix="readmit-tests-"))
os.environ["BENTOML_HOME"] = str(_SESSION_ROOT / "bentoml")
os.environ["READMIT_BENTOML_HOME"] = str(_SESSION_ROOT / "bentoml")
os.environ["READMIT_ARTIFACTS_URI"] = str(_SESSION_ROOT / "artifacts")
# The locally deployed service's state (which server is live): never a developer's `make up`.
os.environ["READMIT_SERVING_RUN_DIR"] = str(_SESSION_ROOT / "serving")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from readmit import data  # noqa: E402
from readmit.settings import Settings, get_settings  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DATA_FILE = PROJECT_ROOT / "data" / "raw" / "diabetic_data.csv.gz"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Remove the session's stores (models, bentos, artifacts): about 70 MB per run, left in
    /tmp forever before. READMIT_KEEP_TEST_STORES=1 keeps them for a post-mortem."""
    if os.environ.get("READMIT_KEEP_TEST_STORES") != "1":
        shutil.rmtree(_SESSION_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def full_frame() -> pd.DataFrame:
    """The whole shipped data set, parsed with the schema's dtypes (read once per session)."""
    return data.read_encounters(str(DATA_FILE)).frame


@pytest.fixture(scope="session")
def sample_frame(full_frame: pd.DataFrame) -> pd.DataFrame:
    """3,000 consecutive real encounters (time order kept, patients recur)."""
    return data.in_time_order(full_frame).iloc[20_000:23_000].reset_index(drop=True)


@pytest.fixture
def fresh_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings with a private artifact store and a model name of its own (own registry)."""
    monkeypatch.setenv("READMIT_ARTIFACTS_URI", str(tmp_path / "artifacts"))
    monkeypatch.setenv("READMIT_MODEL_NAME", f"readmission-{uuid.uuid4().hex[:8]}")
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def _drill_kind(request: pytest.FixtureRequest, record_property) -> None:
    """A fault drill's kind in the JUnit report (`benchmarks/resilience.py` counts the kinds)."""
    marker = request.node.get_closest_marker("drill")
    if marker is not None:
        record_property("drill", marker.args[0])
