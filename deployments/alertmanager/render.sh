#!/bin/sh
# Renders alertmanager.yml with the webhook URL, then runs the given command (Alertmanager).
#
#   sh render.sh /bin/alertmanager --config.file=/alertmanager/config.yml ...
#
# The entrypoint of the Alertmanager container in ../compose.yaml and ../k8s/alertmanager.yaml,
# and what ../local/services.py runs: one renderer for the three stacks. Alertmanager 0.25 expands
# no environment variables in its config and has no `url_file` for webhooks, hence this step.
#
# READMIT_ALERT_WEBHOOK_URL (http:// or https://) replaces the placeholder URL of the template;
# unset or empty, the `webhook_configs` list is dropped: the receiver notifies nobody and alerts
# show in Alertmanager's UI only. ALERTMANAGER_TEMPLATE and ALERTMANAGER_CONFIG override the
# paths (the container defaults below). The rendered file is readable by its owner only: a
# webhook URL often carries a token. POSIX sh and awk only (the image has busybox, no Python).
set -eu

template="${ALERTMANAGER_TEMPLATE:-/etc/alertmanager/alertmanager.yml}"
rendered="${ALERTMANAGER_CONFIG:-/alertmanager/config.yml}"
url="${READMIT_ALERT_WEBHOOK_URL:-}"
export READMIT_ALERT_WEBHOOK_URL="$url"

case "$url" in
  "") echo "render.sh: READMIT_ALERT_WEBHOOK_URL is not set: alerts reach Alertmanager's UI only" >&2 ;;
  *[[:space:]]*) echo "render.sh: READMIT_ALERT_WEBHOOK_URL contains white space" >&2; exit 2 ;;
  http://* | https://*) ;;
  *) echo "render.sh: READMIT_ALERT_WEBHOOK_URL must start with http:// or https://" >&2; exit 2 ;;
esac

umask 077
# The URL comes from ENVIRON and goes in by index/substr, not sub()/gsub(): `&` and `\` in it
# (query strings) stay literal.
awk -v placeholder="http://alert-webhook.invalid/readmit" '
  function indent(line) { match(line, /^ */); return RLENGTH }
  BEGIN { url = ENVIRON["READMIT_ALERT_WEBHOOK_URL"]; dropping = 0 }
  dropping && ($0 ~ /^[ \t]*$/ || indent($0) > drop_indent) { next }
  { dropping = 0 }
  url == "" && $0 ~ /^ *(- )?webhook_configs:/ { dropping = 1; drop_indent = indent($0); next }
  {
    at = index($0, placeholder)
    if (at) { $0 = substr($0, 1, at - 1) url substr($0, at + length(placeholder)); found = 1 }
    print
  }
  END { if (url != "" && !found) { print "render.sh: no placeholder URL in the template" > "/dev/stderr"; exit 3 } }
' "$template" > "$rendered.tmp"
mv "$rendered.tmp" "$rendered"

exec "$@"
