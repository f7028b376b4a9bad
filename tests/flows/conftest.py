"""Shared by the flow tests: the Prefect test harness, `flows` importable, a small real CSV."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from prefect.testing.utilities import prefect_test_harness

from readmit import data

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the `flows` package


@pytest.fixture(scope="module")
def harness() -> Iterator[None]:
    """A temporary Prefect API for the module's flow runs (start-up is slow on 2 busy cores)."""
    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def small_csv(tmp_path, full_frame: pd.DataFrame) -> str:
    """The 4,000 oldest encounters of the shipped data, as a CSV file."""
    rows = data.in_time_order(full_frame).iloc[:4000]
    path = tmp_path / "encounters_small.csv"
    path.write_bytes(data.to_csv_bytes(rows))
    return str(path)
