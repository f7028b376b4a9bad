"""Snapshots: verified before anything is restored, never mixed into a machine that has state,
unfinished ones never count, retention keeps the newest N (`readmit.ops.backup`)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from readmit import storage
from readmit.model import registry
from readmit.ops import audit, backup
from readmit.settings import Settings, get_settings


@pytest.fixture
def state(fresh_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A promoted model, an audit line and a snapshot folder of their own."""
    monkeypatch.setenv("READMIT_BACKUP_URI", str(tmp_path / "backups"))
    get_settings.cache_clear()
    settings = get_settings()
    tag = registry.save_model({"weights": [1, 2, 3]}, {"threshold": 0.5})
    registry.promote(tag, reason="test")
    audit.append(settings.artifacts_uri, "promoted", tag=tag)
    return settings


def _wipe(settings: Settings) -> None:
    """Forget this model name's pointer and the artifact store (the models stay: one BentoML
    store per test process)."""
    registry.registry_path(settings).unlink()
    shutil.rmtree(settings.artifacts_uri)


def test_snapshot_then_restore_brings_back_pointer_and_audit(state: Settings) -> None:
    pointer = registry.registry_path(state).read_bytes()
    log = storage.read_bytes(state.layout.audit_log())
    info = backup.create_snapshot(state)
    assert info.production == registry.production_tag(state) and len(info.models) == 1
    assert "Prefect database: READMIT_PREFECT_DATABASE is not set" in info.not_included
    _wipe(state)
    report = backup.restore(info.uri, state)
    assert registry.registry_path(state).read_bytes() == pointer
    assert storage.read_bytes(state.layout.audit_log()) == log
    assert report.production == info.production


def test_an_altered_file_is_named_and_nothing_is_restored(state: Settings) -> None:
    info = backup.create_snapshot(state)
    _wipe(state)
    audit_copy = Path(info.uri) / "artifacts" / "audit" / "audit.jsonl"
    audit_copy.write_bytes(audit_copy.read_bytes()[:-5])  # truncated
    with pytest.raises(backup.SnapshotCorruptError, match=r"audit/audit\.jsonl does not match"):
        backup.restore(info.uri, state)
    assert not registry.registry_path(state).exists()
    assert not storage.exists(state.layout.audit_log())


def test_restore_refuses_a_machine_with_state_unless_forced(state: Settings) -> None:
    info = backup.create_snapshot(state)
    with pytest.raises(backup.RestoreTargetNotEmptyError, match="already has state"):
        backup.restore(info.uri, state)
    audit.append(state.artifacts_uri, "rejected", tag="later")
    backup.restore(info.uri, state, force=True)
    assert [r["decision"] for r in audit.read(state.artifacts_uri)] == ["promoted"]


def test_unfinished_snapshots_are_not_listed_and_retention_keeps_the_newest(
    state: Settings,
) -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    made = [backup.create_snapshot(state, now=t0 + timedelta(hours=h)).uri for h in range(3)]
    unfinished = Path(made[0]).with_name(backup.snapshot_name(t0 - timedelta(days=1)))
    shutil.copytree(made[0], unfinished)
    (unfinished / backup.MANIFEST).unlink()  # as if the writer died before the manifest
    assert [s.uri for s in backup.list_snapshots(state)] == made
    with pytest.raises(backup.SnapshotCorruptError, match=r"has no manifest\.json"):
        backup.restore(str(unfinished), state, force=True)
    removed = backup.prune(state, keep=2, now=t0 + timedelta(days=1))
    assert sorted(removed) == sorted([made[0], str(unfinished)])
    assert [s.uri for s in backup.list_snapshots(state)] == made[1:]


def test_backups_inside_the_artifact_store_are_not_copied_into_the_next(
    fresh_settings: Settings,
) -> None:
    registry.save_model({"w": 1}, {"threshold": 0.5})
    first = backup.create_snapshot(fresh_settings)  # default root: <artifacts>/backups
    assert first.uri.startswith(fresh_settings.layout.path("backups"))
    second = backup.create_snapshot(fresh_settings)
    manifest = json.loads((Path(second.uri) / backup.MANIFEST).read_text())
    assert not any("backups/" in rel for rel in manifest["files"])


def test_the_history_store_and_prefect_sqlite_are_copied_online(
    state: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from readmit.features import served_history

    store = served_history.open_store(state.history_store_uri)
    store.add([("p1", "e1", "2026-12-01T00:00:00+00:00", (1, 2, 3))])
    prefect_db = tmp_path / "prefect.db"
    db = sqlite3.connect(prefect_db)
    db.execute("CREATE TABLE flow_run (id TEXT)")
    db.execute("INSERT INTO flow_run VALUES ('run-1')")
    db.commit()  # the connection stays open: an online copy
    monkeypatch.setenv("READMIT_PREFECT_DATABASE", f"sqlite+aiosqlite:///{prefect_db}")
    get_settings.cache_clear()
    info = backup.create_snapshot(get_settings())
    db.close()
    _wipe(state)
    restored = tmp_path / "restored" / "prefect.db"
    monkeypatch.setenv("READMIT_PREFECT_DATABASE", f"sqlite:///{restored}")
    get_settings.cache_clear()
    backup.restore(info.uri, get_settings())
    assert sqlite3.connect(restored).execute("SELECT id FROM flow_run").fetchall() == [("run-1",)]
    again = served_history.open_store(get_settings().history_store_uri)
    assert [e for e, _, _ in again.entries(["p1"])["p1"]] == ["e1"]


def test_an_unsupported_prefect_database_is_a_clear_error() -> None:
    with pytest.raises(backup.BackupError, match="'mysql' is not supported"):
        backup.prefect_database_kind("mysql://u:p@h/db")
