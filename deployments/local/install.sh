#!/usr/bin/env bash
# Install the Debian packages that `make up`, the integration tests and the benchmarks need
# (prometheus-alertmanager: routes the alerts of deployments/prometheus/alerts.yml, started by
# services.py on loopback; its package brings `amtool`, which the tests use to check the config;
# wrk: the HTTP load generator of benchmarks/serving.py; redis-server: the shared
# patient-history store for many pods, which a test starts on loopback).
#
# Idempotent and non-interactive: packages already installed are not fetched again, and when all
# of them are present the script returns at once (no `apt-get update`). Package services are kept
# from starting during the install (policy-rc.d): our scripts run every service themselves, on
# 127.0.0.1 only, by PID. Python-side tools (SeaweedFS's `weed`) come from the venv, not from here.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

# READMIT_SYSTEM_PACKAGES replaces the list (the tests use it to check the no-root message).
read -r -a PACKAGES <<< "${READMIT_SYSTEM_PACKAGES:-prometheus prometheus-pushgateway prometheus-alertmanager postgresql chromium chromium-driver wrk redis-server}"

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install.sh: all present (${PACKAGES[*]})"
  exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
  if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
    echo "install.sh: these Debian packages are missing: ${missing[*]}" >&2
    echo "install.sh: installing them needs root or passwordless sudo. Run once:" >&2
    echo "    sudo bash deployments/local/install.sh" >&2
    echo "then run the make target again." >&2
    exit 1
  fi
  SUDO=(sudo -n DEBIAN_FRONTEND=noninteractive)
fi

# Keep the packages' own daemons (prometheus on 0.0.0.0:9090, alertmanager on 0.0.0.0:9093, a
# postgres cluster on 5432, ...) from being started by their maintainer scripts. Only remove the
# policy file if we created it.
POLICY=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 755 "$POLICY"
  created_policy=1
fi
cleanup() { if [ "$created_policy" -eq 1 ]; then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

start=$(date +%s)
echo "install.sh: installing ${missing[*]}"
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}" >/dev/null
echo "install.sh: done in $(( $(date +%s) - start )) s"
