"""A small real Prefect flow for the Prefect-server restart drill
(tests/integration/test_drill_prefect_restart.py): `n` tasks in a row, each sleeping, then
writing its own file and one line in `writes.log` (so a task that ran twice shows). The flow run
id goes to `flow_run_id` first, so the drill can ask the server about this very run.

Run as `python flows_for_drills.py OUT_DIR N SECONDS` with PREFECT_API_URL set.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run


@task(cache_policy=NO_CACHE)
def step(out_dir: str, index: int, seconds: float) -> str:
    """Sleep, then write this step's file (O_EXCL: a second run of the step fails loudly)."""
    time.sleep(seconds)
    with open(Path(out_dir) / "writes.log", "a") as log:
        log.write(f"{index} {time.time():.3f}\n")
    path = Path(out_dir) / f"step-{index}.txt"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"step {index}\n")
    return str(path)


@flow(name="drill-steps")
def steps_flow(out_dir: str, n: int = 8, seconds: float = 4.0) -> list[str]:
    """`n` steps one after the other."""
    (Path(out_dir) / "flow_run_id").write_text(str(flow_run.id))
    return [step(out_dir, i, seconds) for i in range(n)]


if __name__ == "__main__":
    steps_flow(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))
