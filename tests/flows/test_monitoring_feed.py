"""The monitoring flow on batches as a hospital feed delivers them: raw rows of the same period
as the training data, identifiers kept, no outcome column, every discharge disposition (died
and hospice included), patients the model has never seen. Clean data must raise no alarm."""

from __future__ import annotations

from flows.monitoring import monitoring_flow
from flows.training import training_flow
from readmit import data
from readmit.data import inbox
from readmit.model import registry
from readmit.monitoring import drift
from readmit.schema import DIED_OR_HOSPICE_IDS


def test_clean_raw_feed_batches_raise_no_alarm(harness, fresh_settings, tmp_path, full_frame):
    period = data.in_time_order(full_frame).iloc[:26_000]
    known, unseen = data.split_by_patient(period, holdout_fraction=0.25, seed=7)
    training_csv = tmp_path / "training.csv"
    training_csv.write_bytes(data.to_csv_bytes(known))
    out = training_flow(data_uri=str(training_csv), search_budget_s=8)
    registry.promote(out["tag"], reason="test")
    feed = unseen.drop(columns=["readmitted"])
    assert feed["discharge_disposition_id"].isin(DIED_OR_HOSPICE_IDS).sum() > 50
    batches = drift.sample_batches(feed, n_batches=2, batch_size=5000, seed=3)
    for i, batch in enumerate(batches):
        inbox.publish_batch(fresh_settings.artifacts_uri, inbox.batch_id(i), batch)
    result = monitoring_flow(cooldown_s=0)
    summaries = result["batches"]
    assert len(summaries) == len(batches)
    for summary in summaries:
        assert summary["severity"] in ("none", "minor"), summary
        assert not summary["alert"], summary
    assert result["event"] is False
