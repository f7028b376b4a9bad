"""Reading the shipped prediction log: chunks in time order, rows typed, windows by row time,
unreadable chunks set aside with the reason while the rest is read."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from readmit import layout, storage
from readmit.monitoring import served
from readmit.serving import prediction_log


def _write_chunk(log_uri: str, at: datetime, rows: list[dict[str, object]], seq: int) -> str:
    url = f"{log_uri}/{layout.chunk_relpath(at, 'pod-w0-p1', seq)}"
    storage.write_bytes(url, prediction_log.encode_chunk(rows))
    return url


def _row(at: datetime, p: float, **extra: object) -> dict[str, object]:
    return {"timestamp": at.isoformat(), "probability": p, "model_tag": "m:v1", **extra}


def test_rows_are_typed_and_windowed_by_their_own_time(tmp_path: Path) -> None:
    log_uri = str(tmp_path / "logs")
    t0 = datetime(2026, 12, 4, 9, 59, 59, tzinfo=UTC)
    t1 = t0 + timedelta(seconds=2)  # the next hour: same chunk, another window
    _write_chunk(log_uri, t0, [_row(t0, 0.1, age="[70-80)"), _row(t1, 0.2, age=None)], 1)
    (chunk,) = served.list_chunks(log_uri)
    assert chunk.first_row_at == t0.replace(microsecond=0)
    frame = served.read_chunk(chunk)
    assert str(frame["age"].dtype) == "string" and frame["age"].isna().tolist() == [False, True]
    starts = served.window_start(frame["timestamp"], timedelta(hours=1))
    assert [served.window_id(s) for s in starts] == ["20261204T090000Z", "20261204T100000Z"]


def test_unreadable_chunks_are_set_aside_and_the_rest_is_read(tmp_path: Path) -> None:
    log_uri, bad_dir = str(tmp_path / "logs"), str(tmp_path / "bad")
    t0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    good = _write_chunk(log_uri, t0, [_row(t0, 0.3)], 1)
    truncated = _write_chunk(log_uri, t0 + timedelta(seconds=1), [_row(t0, 0.4)] * 50, 2)
    Path(truncated).write_bytes(Path(truncated).read_bytes()[:40])
    no_probability = _write_chunk(log_uri, t0 + timedelta(seconds=2), [{"timestamp": "x"}], 3)
    garbage = f"{log_uri}/{layout.chunk_relpath(t0 + timedelta(seconds=3), 'pod-w1-p1', 1)}"
    storage.write_bytes(garbage, gzip.compress(b"not json\n"))
    frames, bad = served.read_chunks(served.list_chunks(log_uri), bad_dir)
    assert [chunk.url for chunk, _ in frames] == [good]
    assert {b.name.rsplit("/", 1)[-1] for b in bad} == {
        Path(u).name for u in (truncated, no_probability, garbage)
    }
    reasons = {b.name.rsplit("/", 1)[-1]: b.reason for b in bad}
    assert "gzip" in reasons[Path(truncated).name]
    assert "probability" in reasons[Path(no_probability).name]
    assert "not JSON" in reasons[Path(garbage).name]
    # Set aside, not deleted: the bytes and the reason are kept; the log holds only good chunks.
    assert [c.url for c in served.list_chunks(log_uri)] == [good]
    kept = served.list_chunks(bad_dir)
    assert len(kept) == 3
    note = storage.read_json(kept[0].url + ".reason.json")
    assert note["reason"] and note["chunk"] == kept[0].name


def test_rows_frame_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="model_tag"):
        served.rows_frame([{"timestamp": "2026-12-04T00:00:00+00:00", "probability": 0.1}])
    frame = served.rows_frame([_row(datetime(2026, 1, 1, tzinfo=UTC), 0.5)])
    assert isinstance(frame["timestamp"].dtype, pd.DatetimeTZDtype)


def test_chunks_without_the_experiment_columns_read_like_rows_outside_an_experiment(
    tmp_path: Path,
) -> None:
    """Chunks shipped before the live-experiment columns existed still read, with the columns
    empty, next to chunks that carry them."""
    log_uri = str(tmp_path / "logs")
    t0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    _write_chunk(log_uri, t0, [_row(t0, 0.1)], 1)  # an old chunk
    shadow = {"experiment_id": "exp-1", "variant": "champion", "challenger_probability": 0.3}
    _write_chunk(log_uri, t0 + timedelta(seconds=1), [_row(t0, 0.2, **shadow)], 2)
    frames, bad = served.read_chunks(served.list_chunks(log_uri), str(tmp_path / "bad"))
    assert not bad
    old, new = (frame for _, frame in frames)
    assert old[["experiment_id", "variant"]].isna().all(axis=None)
    assert old["challenger_probability"].isna().all()
    assert str(old["challenger_probability"].dtype) == "float64"
    assert new.iloc[0][["experiment_id", "variant"]].tolist() == ["exp-1", "champion"]
    both = pd.concat([old, new], ignore_index=True)
    assert both["challenger_probability"].tolist()[1] == pytest.approx(0.3)
