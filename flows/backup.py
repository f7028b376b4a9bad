"""Backup flow: a consistent snapshot of the whole state, then retention (`readmit.ops.backup`).

Scheduled daily in prefect.yaml (`backup`); `readmit backup` runs the same steps by hand and
`readmit restore SNAPSHOT` rebuilds an empty machine from one.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from readmit.ops import backup
from readmit.settings import get_settings


@task(cache_policy=NO_CACHE)
def snapshot() -> backup.SnapshotInfo:
    """Models, pointer, artifact store, history store and Prefect database, manifest last."""
    logger = get_run_logger()
    info = backup.create_snapshot(get_settings(), progress=logger.info)
    logger.info(
        "snapshot %s: %d files, %.1f MB, production %s", info.uri, info.files, info.megabytes,
        info.production,
    )  # fmt: skip
    for missing in info.not_included:
        logger.warning("not in the snapshot: %s", missing)
    return info


@task(cache_policy=NO_CACHE)
def retain(keep: int) -> list[str]:
    """Keep the newest `keep` complete snapshots; unfinished old folders go too."""
    removed = backup.prune(get_settings(), keep)
    get_run_logger().info("retention (keep %d): removed %d snapshot(s)", keep, len(removed))
    return removed


@flow(name="backup", log_prints=True)
def backup_flow(keep: int | None = None) -> dict[str, Any]:
    """Snapshot the state and apply retention; the snapshots kept are a Prefect table.

    Args:
        keep: Complete snapshots to keep (default READMIT_BACKUP_KEEP).
    """
    settings = get_settings()
    info = snapshot()
    removed = retain(keep or settings.backup_keep)
    kept = backup.list_snapshots(settings)
    rows = [
        {"snapshot": s.uri, "created_at": s.created_at, "production": s.production,
         "models": len(s.models), "files": s.files, "MB": round(s.megabytes, 2),
         "not_included": "; ".join(s.not_included) or "-"}
        for s in reversed(kept)
    ]  # fmt: skip
    create_table_artifact(
        key="backups",
        table=rows,
        description="Complete snapshots, newest first (restore: readmit restore SNAPSHOT)",
    )
    return {"snapshot": info.uri, "megabytes": info.megabytes, "files": info.files,
            "removed": removed, "kept": [s.uri for s in kept]}  # fmt: skip


if __name__ == "__main__":
    backup_flow()
