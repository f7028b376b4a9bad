"""Registry: lineage saved, one production model at a time, promotion and rollback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from readmit.model import registry


def _model(seed: int) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, 3))
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


def test_no_model_is_a_clear_error(fresh_settings):
    with pytest.raises(registry.NoModelError, match="no production model"):
        registry.load_model()
    assert registry.list_models() == []


def test_save_load_round_trip_keeps_metadata_and_predictions(fresh_settings):
    model = _model(0)
    tag = registry.save_model(model, {"metrics": {"roc_auc": np.float64(0.71)}, "threshold": 0.2})
    loaded = registry.load_model(tag)
    assert loaded.tag == tag and loaded.stage == "candidate"
    assert loaded.metadata["metrics"]["roc_auc"] == 0.71
    x = np.ones((2, 3))
    np.testing.assert_array_equal(loaded.model.predict_proba(x), model.predict_proba(x))
    assert [r.tag for r in registry.list_models()] == [tag]


def test_promote_archives_previous_and_rollback_restores_it(fresh_settings):
    first = registry.save_model(_model(1), {"threshold": 0.1})
    second = registry.save_model(_model(2), {"threshold": 0.2})
    registry.promote(first)
    registry.promote(second, reason="challenger won")
    stages = {r.tag: r.stage for r in registry.list_models()}
    assert stages == {first: "archived", second: "production"}
    assert registry.load_model().tag == second

    record = registry.rollback(reason="bad deploy")
    assert record["tag"] == first and record["previous"] == second
    assert registry.production_tag() == first
    with pytest.raises(registry.RegistryError, match="nothing to roll back"):
        registry.rollback()


def test_stage_labels_in_the_store_mirror_the_registry(fresh_settings):
    tag = registry.save_model(_model(3), {"threshold": 0.1})
    registry.promote(tag)
    bentoml = registry.bentoml_module()
    assert bentoml.models.get(tag).info.labels["stage"] == "production"


def test_promoting_an_unknown_tag_changes_nothing(fresh_settings):
    tag = registry.save_model(_model(4), {"threshold": 0.1})
    registry.promote(tag)
    before = registry.read_state()
    with pytest.raises(registry.NoModelError):
        registry.promote(f"{fresh_settings.model_name}:doesnotexist")
    assert registry.read_state() == before
    history = json.dumps(before.history)
    assert "doesnotexist" not in history


def test_empty_store_imports_production_model_from_artifact_store(
    fresh_settings, tmp_path, monkeypatch
):
    from readmit.settings import get_settings

    tag = registry.save_model(_model(5), {"threshold": 0.4, "note": None})
    registry.promote(tag)
    registry.publish_to_store(tag)
    # Another machine: same artifact store, its own empty model store.
    monkeypatch.setenv("READMIT_BENTOML_HOME", str(tmp_path / "other-home"))
    get_settings.cache_clear()
    other = get_settings()
    # BentoML keeps one store per process: import into it, then read state of the new home.
    assert registry.read_state(other).production is None
    assert registry.import_production(other) == tag
    assert registry.read_state(other).production == tag
    assert registry.load_model(settings=other).metadata["note"] is None


def test_a_model_saved_by_another_version_is_a_clear_error(fresh_settings, monkeypatch):
    """A model pickled with classes this version no longer has (as every model saved before
    the library's rooms) is not usable, with the reason and what to do; it never blocks a
    first model from replacing it."""
    import sys
    import types

    old = types.ModuleType("readmit_old_layout")

    class OldModel(LogisticRegression):
        pass

    OldModel.__module__ = old.__name__
    OldModel.__qualname__ = "OldModel"
    old.OldModel = OldModel  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, old.__name__, old)
    x = np.random.default_rng(0).normal(size=(40, 3))
    tag = registry.save_model(OldModel().fit(x, (x[:, 0] > 0).astype(int)), {"threshold": 0.2})
    registry.promote(tag)
    monkeypatch.delitem(sys.modules, old.__name__)
    with pytest.raises(registry.IncompatibleModelError, match="another version of readmit"):
        registry.load_model()
    assert issubclass(registry.IncompatibleModelError, registry.NoModelError)
    assert registry.production_tag() == tag and not registry.production_loads()
    registry.promote(registry.save_model(_model(3), {"threshold": 0.2}))
    assert registry.production_loads()


def test_a_promotion_takes_only_the_model_that_was_approved_and_records_the_approval(
    fresh_settings,
):
    tag = registry.save_model(_model(3), {"threshold": 0.1})
    digest = registry.model_digest(tag)
    other = {"reviewer": "Dr. Ada", "approved_digest": "0" * 64}
    with pytest.raises(registry.RegistryError, match="not the ones that were approved"):
        registry.promote(tag, reason="approved", approval=other)
    assert registry.production_tag() is None
    approved = {"reviewer": "Dr. Ada", "rationale": "won its experiment", "approved_digest": digest}
    record = registry.promote(tag, reason="approved", approval=approved)
    assert record["approval"] == approved and record["manifest_sha256"] == digest
    assert registry.read_state().history[-1]["approval"]["reviewer"] == "Dr. Ada"
