"""The restore drill: back up, wipe, restore, serve, on the real parts.

A machine's whole state (two models and the production pointer, the audit log, the outcomes
store, the served-history store, the Prefect server's database) is built in its own stores, the
real bento serves raw feed rows of returning patients, `readmit backup` writes a snapshot,
everything is deleted, `readmit restore` rebuilds it, and the bento serves the same rows again:
the same probabilities (to 1e-12), the same pointer and audit log, byte for byte.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest

from readmit import data
from readmit.model import registry
from readmit.ops import deploy
from readmit.settings import Settings

pytestmark = pytest.mark.integration

PROJECT_ROOT = Path(__file__).resolve().parents[2]
READMIT = str(Path(sys.executable).parent / "readmit")
sys.path.insert(0, str(PROJECT_ROOT / "tests" / "service"))
from service_helpers import encounter_json  # noqa: E402


def _run(argv: list[str], env: dict[str, str], timeout: float = 600) -> str:
    done = subprocess.run(
        argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{argv[:3]} exit {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _serve_and_score(settings: Settings, env: dict[str, str], rows: pd.DataFrame, run: Path):
    """The production model of `settings`' stores, served by the real bento, scores `rows`."""
    bento = deploy.build_bento(registry.production_tag(settings), settings)  # as deployment does
    port = deploy.free_port()
    proc, _, log = deploy.start_server(
        bento, port, run_dir=run, settings=settings,
        env=env | {"READMIT_PREDICTION_LOG_ENABLED": "false"},
    )  # fmt: skip
    url = f"http://{deploy.HOST}:{port}"
    try:
        ok, reason = deploy.wait_ready(url, proc, 180)
        assert ok, f"{reason}\n{log.read_text()[-3000:]}"
        model = httpx.get(f"{url}/model", timeout=30).json()
        answers = [
            httpx.post(f"{url}/predict", json=encounter_json(r), timeout=30)
            for _, r in rows.iterrows()
        ]
        assert all(a.status_code == 200 for a in answers), [a.text for a in answers][:3]
        return model["model_tag"], [a.json()["probability"] for a in answers]
    finally:
        deploy.stop_server(proc.pid)


def _prefect_rows(path: Path) -> dict[str, list[str]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {
            table: sorted(str(r[0]) for r in db.execute(f"SELECT id FROM {table}"))
            for table in ("flow", "deployment", "flow_run", "work_pool")
        }
    finally:
        db.close()


def test_back_up_wipe_restore_serve_gives_the_same_answers_pointer_and_audit(
    tmp_path: Path, full_frame: pd.DataFrame, prefect_server
) -> None:
    machine = tmp_path / "machine"
    home, artifacts = machine / "bentoml", machine / "artifacts"
    prefect_db = Path(prefect_server.config.prefect_home) / "prefect.db"
    env = {
        **os.environ,
        "BENTOML_HOME": str(home), "READMIT_BENTOML_HOME": str(home),
        "READMIT_ARTIFACTS_URI": str(artifacts), "READMIT_BACKUP_URI": str(tmp_path / "backups"),
        "READMIT_PREFECT_DATABASE": f"sqlite+aiosqlite:///{prefect_db}",
    }  # fmt: skip
    env.pop("READMIT_HISTORY_STORE", None)
    settings = Settings(bentoml_home=str(home), artifacts_uri=str(artifacts))
    # Raw feed rows of patients with earlier encounters (identifiers, no outcome column).
    later = data.in_time_order(full_frame).iloc[40_000:60_000]
    returning = later[later["patient_nbr"].duplicated(keep="last")].drop_duplicates("patient_nbr")
    rows = returning.head(25).drop(columns=["readmitted"]).reset_index(drop=True)
    served_csv = tmp_path / "served.csv"
    rows[["patient_nbr"]].to_csv(served_csv, index=False)
    built = json.loads(
        _run([sys.executable, str(Path(__file__).with_name("restore_drill_state.py")),
              str(served_csv)], env).strip().splitlines()[-1]
    )  # fmt: skip
    assert built["history_rows"] > 0 and built["outcomes"] > 0

    tag_before, before = _serve_and_score(settings, env, rows, tmp_path / "serve-before")
    assert tag_before == built["tags"][-1]
    pointer = (home / f"{settings.model_name}-registry.json").read_bytes()
    audit_log = (artifacts / "audit" / "audit.jsonl").read_bytes()
    history_before = _history(artifacts)

    pool = f"drill-{os.getpid()}"  # something of the Prefect server's own, to find after restore
    created = httpx.post(
        f"{prefect_server.api_url}/work_pools/", json={"name": pool, "type": "process"}, timeout=30
    )
    assert created.status_code == 201, created.text
    out = _run([READMIT, "backup"], env)
    assert "NOT INCLUDED" not in out, out
    listed = _run([READMIT, "backup", "list"], env).splitlines()
    snapshot = listed[0].split()[0]
    prefect_at_backup = _prefect_rows(Path(snapshot) / "prefect" / "prefect.db")

    shutil.rmtree(machine)  # the machine is gone: models, pointer, stores, history
    restored_db = tmp_path / "new-prefect" / "prefect.db"
    env["READMIT_PREFECT_DATABASE"] = f"sqlite+aiosqlite:///{restored_db}"
    out = _run([READMIT, "restore", snapshot], env)
    assert f"production {tag_before}" in out, out

    assert (home / f"{settings.model_name}-registry.json").read_bytes() == pointer
    assert (artifacts / "audit" / "audit.jsonl").read_bytes() == audit_log
    assert _history(artifacts) == history_before
    assert _prefect_rows(restored_db) == prefect_at_backup
    assert created.json()["id"] in prefect_at_backup["work_pool"]
    tag_after, after = _serve_and_score(settings, env, rows, tmp_path / "serve-after")
    assert tag_after == tag_before
    assert max(abs(a - b) for a, b in zip(before, after, strict=True)) <= 1e-12
    # A second restore onto the rebuilt machine is refused, with the reason.
    refused = subprocess.run(
        [READMIT, "restore", snapshot], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "already has state" in refused.stderr


def _history(artifacts: Path) -> list[tuple]:
    db = sqlite3.connect(artifacts / "history" / "served.sqlite")
    try:
        return db.execute("SELECT * FROM served ORDER BY encounter_key").fetchall()
    finally:
        db.close()
