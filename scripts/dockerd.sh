#!/usr/bin/env bash
# Make sure a Docker Engine answers, starting one (vfs storage, no registry needed) when none does.
# Idempotent: does nothing when `docker info` already works; cleans a stale pid file from an earlier run.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "no Docker Engine answers and we are not root: start Docker (or run as root) and retry" >&2; exit 1
fi
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
  rm -f /var/run/docker.pid
fi
if ! pgrep -x dockerd >/dev/null; then
  # containerd is started by dockerd itself when not running.
  nohup dockerd --storage-driver=vfs >/var/log/reconciler-dockerd.log 2>&1 &
fi
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 0.5
done
echo "dockerd did not answer within 60 s; see /var/log/reconciler-dockerd.log" >&2
tail -20 /var/log/reconciler-dockerd.log >&2 || true
exit 1
