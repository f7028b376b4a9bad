"""Lifecycle decisions after the gate: pure decisions, then the registry and the audit log."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier

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
