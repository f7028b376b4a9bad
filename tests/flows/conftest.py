"""Shared by the flow tests: a small real CSV of encounters to train on."""

from __future__ import annotations

import pandas as pd
import pytest

from readmit import data


@pytest.fixture
def small_csv(tmp_path, full_frame: pd.DataFrame) -> str:
    """The 4,000 oldest encounters of the shipped data, as a CSV file."""
    rows = data.in_time_order(full_frame).iloc[:4000]
    path = tmp_path / "encounters_small.csv"
    path.write_bytes(data.to_csv_bytes(rows))
    return str(path)
