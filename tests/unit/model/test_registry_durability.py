"""The registry after a crash: what the promotion drill (tests/drills/test_promotion_kill.py)
found, pinned down in-process.

A rerun of a promotion repeats nothing (one record, one audit line, rollback still restores the
champion); a temporary left by a killed registry writer is removed by the next write; the
rename is made durable; what a save killed half-way leaves in the model store is neither
promotable nor in the way of saving that version again.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from readmit.model import lifecycle, registry
from readmit.model.gates import GateResult
from readmit.ops import audit
from readmit.settings import Settings

WINS = GateResult(True, ["challenger beats champion by +0.0100 ROC AUC"], [], 0.66, 0.67)


def _model(seed: int) -> LogisticRegression:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(50, 3))
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


def _champion_and_challenger(settings: Settings) -> tuple[str, str]:
    champion = registry.save_model(_model(0), {"threshold": 0.2})
    registry.promote(champion, reason="first")
    return champion, registry.save_model(_model(1), {"threshold": 0.2})


def _temporaries(settings: Settings, model_name: str | None = None) -> list[str]:
    name = model_name or settings.model_name
    home = Path(settings.bentoml_home)
    return sorted(
        p.name for p in home.iterdir() if p.name.startswith((f".{name}-registry", ".registry-"))
    )


def test_promoting_the_production_model_again_adds_no_record(fresh_settings: Settings) -> None:
    champion, challenger = _champion_and_challenger(fresh_settings)
    first = registry.promote(challenger, reason="challenger won")
    again = registry.promote(challenger, reason="rerun")  # a rerun of the killed flow
    assert again == first
    history = registry.read_state().history
    promotions = [r for r in history if r["event"] == "promoted" and r["tag"] == challenger]
    assert [r["previous"] for r in promotions] == [champion]
    assert registry.rollback(reason="bad model")["tag"] == champion  # not itself


def test_a_rerun_of_apply_writes_the_missing_audit_line_once(fresh_settings: Settings) -> None:
    uri = fresh_settings.artifacts_uri
    champion, challenger = _champion_and_challenger(fresh_settings)
    outcome = lifecycle.decide_challenger(WINS)
    registry.promote(challenger, reason=outcome.reason)  # the killed run got this far
    lifecycle.apply(challenger, outcome, WINS, champion=champion, artifacts_uri=uri)
    lifecycle.apply(challenger, outcome, WINS, champion=champion, artifacts_uri=uri)
    lines = [r for r in audit.read(uri) if r["decision"] == "promoted"]
    assert [(r["tag"], r["previous"]) for r in lines] == [(challenger, champion)]
    history = registry.read_state().history
    record = next(r for r in history if r["tag"] == challenger and r["event"] == "promoted")
    assert lines[0]["registry_record"] == record["id"]


def test_a_later_promotion_of_the_same_model_is_audited_again(fresh_settings: Settings) -> None:
    uri = fresh_settings.artifacts_uri
    champion, challenger = _champion_and_challenger(fresh_settings)
    outcome = lifecycle.decide_challenger(WINS)
    lifecycle.apply(challenger, outcome, WINS, champion=champion, artifacts_uri=uri)
    lifecycle.apply(champion, outcome, WINS, champion=challenger, artifacts_uri=uri)
    lifecycle.apply(challenger, outcome, WINS, champion=champion, artifacts_uri=uri)
    lines = [(r["tag"], r["previous"]) for r in audit.read(uri) if r["decision"] == "promoted"]
    assert lines == [(challenger, champion), (champion, challenger), (challenger, champion)]


def test_a_temporary_left_by_a_killed_writer_is_removed_by_the_next_write(
    fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    champion, challenger = _champion_and_challenger(fresh_settings)
    home = Path(fresh_settings.bentoml_home)
    # Another model's writer, mid-write under its own lock: not ours to touch.
    other = home / ".readmission-other-registry.json.abc123"
    other.write_text("{")

    def killed(src: str, dst: str) -> None:  # the process dies between write and rename
        raise SystemExit("killed")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killed)
        with pytest.raises(SystemExit):
            registry.promote(challenger)
    assert len(_temporaries(fresh_settings)) == 1  # the dead writer's, fsynced, never renamed
    assert registry.production_tag() == champion
    registry.promote(challenger)
    assert _temporaries(fresh_settings) == []
    assert other.exists()
    other.unlink()


def test_the_rename_is_made_durable(
    fresh_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, challenger = _champion_and_challenger(fresh_settings)
    synced: list[str] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    registry.promote(challenger)
    home = str(Path(fresh_settings.bentoml_home).resolve())
    assert home in synced, synced  # the folder, after the rename: a power cut keeps it


def test_a_torn_save_is_not_promotable_and_saving_its_version_again_works(
    fresh_settings: Settings,
) -> None:
    champion, _ = _champion_and_challenger(fresh_settings)
    version = registry.new_version()
    tag = registry.save_model(_model(2), {"threshold": 0.2}, version=version)
    # What SIGKILL during BentoML's file-by-file copy into its store leaves: the folder with
    # some files, and no registration (written only after the copy).
    folder = Path(fresh_settings.bentoml_home) / "models" / fresh_settings.model_name / version
    (folder / registry.MODEL_FILE).unlink()
    state = registry.read_state()
    del state.stages[tag]
    state.history = [r for r in state.history if r["tag"] != tag]
    with registry.locked(fresh_settings):
        registry._write_state(state, fresh_settings)

    with pytest.raises(registry.NoModelError, match="never registered"):
        registry.promote(tag)
    assert registry.production_tag() == champion
    assert registry.save_model(_model(2), {"threshold": 0.2}, version=version) == tag  # rerun
    registry.promote(tag)
    assert registry.load_model().model.predict_proba(np.ones((1, 3))).shape == (1, 2)
