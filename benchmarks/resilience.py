"""Benchmark: operations you can trust. Restore time and size, fault drills, supply chain.

`restore`: a machine's whole state, made the way a user makes it: `readmit run` (train, serve
through the real bento, replay raw feed batches with drift, outcomes, monitoring windows,
retraining and the gate) against a real Prefect server (deployments/local/services.py, own run
directory), so the Prefect database holds the loop's flow runs. Then `readmit score` of 500 raw
feed rows (identifiers, no outcome column, every discharge disposition, unseen patients),
`readmit backup` (with READMIT_PREFECT_DATABASE = the running server's SQLite database, copied
online), the Prefect server stopped and every store deleted (model store, artifact store,
served-history store, Prefect database), `readmit restore SNAPSHOT` timed (`restore_s`: the
command's wall time, interpreter start included), the Prefect server started again on the
restored database, and the same rows scored again. `restore_identical` is true when the
probabilities agree to 1e-12, the registry file and the audit log are byte for byte the same,
and the restored server lists the same flow runs. `snapshot_mb`: the manifest's total.

`drills`: `pytest -m drill` (tests/drills and every test marked `drill(kind)`), JUnit report
parsed. `faults_injected`: distinct kinds whose drills all passed. `faults_lost_or_corrupt`:
drill tests that failed (each asserts that nothing was lost or corrupted; a failure counts
here whatever its cause). `redeploy_failed_requests`: failed requests of the c8 redeploy drill.

`audit`: `python -m readmit.ops.audit_checks` (what `make audit` runs): unlisted findings and
whether a vulnerability database answered (`audited` / `not_audited`, never a pass by default).

    .venv/bin/python benchmarks/resilience.py [--only restore drills audit]

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET  # nosec B405: our own pytest report
from pathlib import Path
from typing import Any

import pandas as pd

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA_FILE = PROJECT_ROOT / "data" / "raw" / "diabetic_data.csv.gz"


def log(msg: str) -> None:
    print(f"[resilience] {msg}", file=sys.stderr, flush=True)


def run(argv: list[str], env: dict[str, str], timeout: float = 1800) -> str:
    """Run a command; its stdout (fails loudly with its output)."""
    done = subprocess.run(  # nosec B603: fixed argv
        argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} exit {done.returncode}:\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")  # fmt: skip
    return done.stdout


def services_module() -> Any:
    spec = importlib.util.spec_from_file_location(
        "readmit_local_services", PROJECT_ROOT / "deployments" / "local" / "services.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["readmit_local_services"] = module
    spec.loader.exec_module(module)
    return module


def feed_rows(path: Path) -> None:
    """500 raw feed rows of the last encounters: identifiers, no outcome column."""
    raw = pd.read_csv(DATA_FILE, dtype=str, keep_default_na=False)  # as the feed spells it
    raw = raw.sort_values("encounter_id", key=lambda ids: ids.astype(int))
    raw.tail(500).drop(columns=["readmitted"]).to_csv(path, index=False)


def flow_runs(db: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return sorted(str(r[0]) for r in conn.execute("SELECT id FROM flow_run"))
    finally:
        conn.close()


def restore_figures(work: Path) -> dict[str, Any]:
    """Build a machine with `readmit run`, back it up, delete it, restore it, compare."""
    services = services_module()
    machine = work / "machine"
    home, artifacts = machine / "bentoml", machine / "artifacts"
    cfg = services.Config(run_dir=machine / "stack", free_ports=True, tie_to_parent=True)
    prefect_db = cfg.prefect_home / "prefect.db"
    env = {
        **os.environ,
        "BENTOML_HOME": str(home), "READMIT_BENTOML_HOME": str(home),
        "READMIT_ARTIFACTS_URI": str(artifacts), "READMIT_BACKUP_URI": str(work / "backups"),
        "READMIT_SERVING_RUN_DIR": str(machine / "serving"),
        "READMIT_SERVICE_PORT": str(services.free_port()),
        "READMIT_PREFECT_DATABASE": f"sqlite+aiosqlite:///{prefect_db}",
    }  # fmt: skip
    env.pop("READMIT_HISTORY_STORE", None)
    feed = work / "feed.csv"
    feed_rows(feed)
    services.up(cfg, only=["prefect-server"], run_deploy=False)
    try:
        env |= services.client_env(cfg) | {"PREFECT_HOME": str(cfg.prefect_home)}
        t0 = time.perf_counter()
        run([str(BIN / "readmit"), "run"], env)
        log(f"readmit run: {time.perf_counter() - t0:.0f} s")
        run([str(BIN / "readmit"), "score", str(feed), "-o", str(work / "before.csv")], env)
        backup_out = run([str(BIN / "readmit"), "backup"], env)
        log(backup_out.strip().splitlines()[-1])
        assert "NOT INCLUDED" not in backup_out, backup_out
    finally:
        services.stop(cfg)
        from readmit.ops import deploy

        deploy.stop(machine / "serving")  # the bento `readmit run` left serving
    snapshot = run([str(BIN / "readmit"), "backup", "list"], env).split()[0]
    manifest = json.loads((Path(snapshot) / "manifest.json").read_text())
    pointer = next(home.glob("*-registry.json")).read_bytes()
    audit_log = (artifacts / "audit" / "audit.jsonl").read_bytes()
    runs_before = flow_runs(prefect_db)
    shutil.rmtree(machine)  # models, pointer, artifact store, history store, Prefect database
    t0 = time.perf_counter()
    run([str(BIN / "readmit"), "restore", snapshot], env)
    restore_s = time.perf_counter() - t0
    services.up(cfg, only=["prefect-server"], run_deploy=False)  # on the restored database
    try:
        runs_after = flow_runs(prefect_db)
        state = services.load_state(cfg)
        api = state["services"]["prefect-server"]["urls"]["api"]
        listed = services.http_get(f"{api}/health")[0] == 200
    finally:
        services.stop(cfg)
    same_pointer = next(home.glob("*-registry.json")).read_bytes() == pointer
    same_audit = (artifacts / "audit" / "audit.jsonl").read_bytes() == audit_log
    run([str(BIN / "readmit"), "score", str(feed), "-o", str(work / "after.csv")], env)
    before = pd.read_csv(work / "before.csv")
    after = pd.read_csv(work / "after.csv")
    max_diff = float((before["probability"] - after["probability"]).abs().max())
    same_models = list(before["model_tag"].unique()) == list(after["model_tag"].unique())
    print("restore drill on `readmit run`'s state:")
    print(f"  snapshot       {manifest['files'].__len__()} files, "
          f"{sum(f['bytes'] for f in manifest['files'].values()) / 1e6:.1f} MB, "
          f"{len(manifest['models'])} models, production {manifest['production']}")  # fmt: skip
    print(f"  restore        {restore_s:.1f} s")
    print(f"  predictions    max |before - after| {max_diff:.2e} over {len(before)} raw feed rows")
    print(f"  pointer/audit  identical: {same_pointer} / {same_audit}")
    print(f"  Prefect        {len(runs_before)} flow runs before, {len(runs_after)} restored, "
          f"server healthy on the restored database: {listed}")  # fmt: skip
    identical = (max_diff <= 1e-12 and same_models and same_pointer and same_audit
                 and runs_after == runs_before and bool(runs_before) and listed)  # fmt: skip
    return {
        "restore_s": round(restore_s, 1),
        "snapshot_mb": round(sum(f["bytes"] for f in manifest["files"].values()) / 1e6, 2),
        "restore_identical": identical,
        "restore_max_probability_diff": max_diff,
        "restore_flow_runs": len(runs_after),
    }


def drill_figures(work: Path) -> dict[str, Any]:
    """Every fault drill, on the real parts; counted from the JUnit report."""
    report = work / "drills.xml"
    t0 = time.perf_counter()
    done = subprocess.run(  # nosec B603: fixed argv
        [str(BIN / "pytest"), "-q", "-m", "drill", "-p", "no:cacheprovider",
         f"--junitxml={report}", "tests"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3600, check=False,
    )  # fmt: skip
    print(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:])
    kinds: dict[str, list[bool]] = {}
    redeploy_failed: int | None = None
    failed_tests = []
    for case in ET.parse(report).getroot().iter("testcase"):  # nosec B314: our own report
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        if "drill" not in props:
            continue
        ok = not any(case.find(tag) is not None for tag in ("failure", "error", "skipped"))
        kinds.setdefault(str(props["drill"]), []).append(ok)
        if not ok:
            failed_tests.append(f"{case.get('classname')}::{case.get('name')}")
        if "redeploy_failed_requests" in props:
            redeploy_failed = int(str(props["redeploy_failed_requests"]))
    print(f"fault drills ({time.perf_counter() - t0:.0f} s):")
    for kind, results in sorted(kinds.items()):
        print(f"  {kind:<28} {sum(results)}/{len(results)} passed")
    for name in failed_tests:
        print(f"  FAILED {name}")
    return {
        "faults_injected": sum(all(r) for r in kinds.values()),
        "fault_kinds": sorted(kinds),
        "faults_lost_or_corrupt": len(failed_tests),
        "redeploy_failed_requests": redeploy_failed,
    }


def audit_figures() -> dict[str, Any]:
    """`make audit`'s checks; its last line is their JSON summary."""
    done = subprocess.run(  # nosec B603: fixed argv
        [sys.executable, "-m", "readmit.ops.audit_checks", "--tools",
         str(PROJECT_ROOT / ".venv" / "audit-tools" / "bin")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1800, check=False,
    )  # fmt: skip
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"audit: {summary['audit_unlisted_findings']} unlisted findings, vulnerability scan "
          f"{summary['vulnerability_scan']}")  # fmt: skip
    return {k: summary[k] for k in ("audit_unlisted_findings", "vulnerability_scan")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", nargs="*", choices=("restore", "drills", "audit"))
    args = parser.parse_args()
    wanted = set(args.only or ("restore", "drills", "audit"))
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="readmit-resilience-") as tmp:
        work = Path(tmp)
        if "restore" in wanted:
            figures |= restore_figures(work)
        if "drills" in wanted:
            figures |= drill_figures(work)
    if "audit" in wanted:
        figures |= audit_figures()
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
