#!/bin/sh
# Register prefect.yaml's deployments with the Prefect server at PREFECT_API_URL.
# Installed as `readmit-deploy` in the worker image; run once by the compose `deploy` service and
# the Kubernetes `prefect-deploy` Job (what `make deploy` does for the local stack).
set -eu

# The process pool of prefect.yaml (`definitions.work_pools.process`); tests check they agree.
pool="readmit-process"

cd "${READMIT_PROJECT_DIR:-/opt/readmit}"

# Wait for the API: Kubernetes starts this Job together with the server, and the server's first
# start migrates its database (minutes on a small node).
python - <<'PY'
import os
import sys
import time
import urllib.request

url = os.environ["PREFECT_API_URL"].rstrip("/") + "/health"
deadline = time.monotonic() + 600
while True:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            if resp.read().strip() == b"true":
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(f"readmit-deploy: {url} not healthy after 600 s")
    time.sleep(3)
PY

# `prefect deploy` refuses a pool that does not exist. The worker creates it too (whichever comes
# first: hence the second inspect); never --overwrite, the pool may have been tuned in the UI.
if ! prefect work-pool inspect "$pool" >/dev/null 2>&1; then
    prefect work-pool create "$pool" --type process \
        || prefect work-pool inspect "$pool" >/dev/null
fi

exec prefect --no-prompt deploy --all
