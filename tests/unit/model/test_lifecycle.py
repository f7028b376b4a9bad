"""Lifecycle decisions after the gate: pure decisions, then the registry and the audit log."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier

from readmit import storage
from readmit.model import lifecycle, registry
from readmit.model.gates import GateResult
from readmit.ops import audit
from readmit.settings import Settings

PASSED = GateResult(True, ["no champion: first production model"], [], None, 0.68)
FAILED = GateResult(False, ["ROC AUC 0.6000 is below the floor 0.62"], [], None, 0.60)
WINS = GateResult(True, ["challenger beats champion by +0.0100 ROC AUC"], [], 0.66, 0.67)
LOSES = GateResult(False, ["gain +0.0010 ROC AUC is below the margin 0.005"], [], 0.66, 0.661)


def test_first_model_is_promoted_only_when_nothing_is_in_production() -> None:
    first = lifecycle.decide_first(PASSED, has_production=False, promote_if_passing=True)
    assert (first.stage, first.audit) == ("production", "promoted")
    later = lifecycle.decide_first(PASSED, has_production=True, promote_if_passing=True)
    assert (later.stage, later.audit) == ("candidate", None)
    assert "retraining" in later.reason
    unasked = lifecycle.decide_first(PASSED, has_production=False, promote_if_passing=False)
    assert unasked.stage == "candidate"
    failed = lifecycle.decide_first(FAILED, has_production=False, promote_if_passing=True)
    assert failed.stage == "candidate" and "below the floor" in failed.reason


def test_challenger_is_promoted_or_archived_with_the_gate_reasons() -> None:
    assert lifecycle.decide_challenger(WINS) == lifecycle.Outcome(
        "production", WINS.reasons[0], "promoted"
    )
    lost = lifecycle.decide_challenger(LOSES)
    assert (lost.stage, lost.audit) == ("archived", "rejected")
    assert "below the margin" in lost.reason


def _save(settings: Settings) -> str:
    model = DummyClassifier(strategy="prior").fit(np.zeros((4, 1)), [0, 1, 0, 0])
    return registry.save_model(model, {"threshold": 0.5}, settings=settings)


def test_apply_promotes_archives_and_audits(fresh_settings: Settings) -> None:
    uri = fresh_settings.artifacts_uri
    champion = _save(fresh_settings)
    first = lifecycle.decide_first(PASSED, has_production=False, promote_if_passing=True)
    lifecycle.apply(champion, first, PASSED, champion=None, artifacts_uri=uri)
    assert registry.production_tag(fresh_settings) == champion
    loser = _save(fresh_settings)
    lifecycle.apply(
        loser, lifecycle.decide_challenger(LOSES), LOSES, champion=champion, artifacts_uri=uri
    )
    assert registry.production_tag(fresh_settings) == champion
    winner = _save(fresh_settings)
    lifecycle.apply(
        winner, lifecycle.decide_challenger(WINS), WINS, champion=champion, artifacts_uri=uri
    )
    assert registry.production_tag(fresh_settings) == winner
    records: list[dict[str, Any]] = audit.read(uri)
    assert [r["decision"] for r in records] == ["promoted", "rejected", "promoted"]
    assert records[1]["champion"] == champion and records[1]["reasons"] == LOSES.reasons
    assert records[2]["previous"] == champion and records[2]["challenger_auc"] == 0.67
    assert pd.notna(records[2]["at"])
    # a promotion names the digest of the signed files it put in production
    assert records[0]["manifest_sha256"] == registry.model_digest(champion, fresh_settings)
    assert records[2]["manifest_sha256"] == registry.model_digest(winner, fresh_settings)
    assert records[0]["manifest_sha256"] != records[2]["manifest_sha256"]


def test_retention_keeps_the_newest_production_and_rollback_target_and_skips_the_archived():
    def summary(tag: str, stage: str) -> registry.ModelSummary:
        return registry.ModelSummary(tag, stage, "2026-01-01", None, None)

    newest_first = [summary("m:9", "candidate"), summary("m:8", "production"),
                    summary("m:7", "candidate"), summary("m:6", "archived"),
                    summary("m:5", "candidate"), summary("m:4", "archived"),
                    summary("m:3", "candidate")]  # fmt: skip
    protected = {"m:8", "m:3"}  # production, and the model a rollback would restore
    assert lifecycle.to_retire(newest_first, 2, protected) == ["m:5"]
    assert lifecycle.to_retire(newest_first, 1, protected) == ["m:7", "m:5"]
    assert lifecycle.to_retire(newest_first, 10, protected) == []


def test_retire_exports_then_archives_and_audits(fresh_settings):
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).normal(size=(40, 2))
    fitted = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    tags = [registry.save_model(fitted, {"threshold": 0.1}) for _ in range(4)]
    registry.promote(tags[1])
    registry.promote(tags[2])  # production; tags[1] is the rollback target
    retired = lifecycle.retire(1, fresh_settings.artifacts_uri)
    assert retired == [tags[0]]
    assert {m.tag: m.stage for m in registry.list_models()}[tags[0]] == "archived"
    assert storage.exists(registry.exported_uri(tags[0], fresh_settings))
    line = audit.read(fresh_settings.artifacts_uri)[-1]
    assert line["decision"] == "archived" and line["tag"] == tags[0]
    assert registry.load_model(tags[0]).tag == tags[0]  # archived, not lost
