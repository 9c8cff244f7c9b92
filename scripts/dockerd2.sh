#!/usr/bin/env bash
# A second Docker Engine next to the main one, standing in for a second host in the tests.
# Usage: bash scripts/dockerd2.sh [start|stop|restart] [N]   (default: start 2; each is idempotent)
# N numbers the engine: reconciler-test-N, socket /run/reconciler-test-N.sock, pool 10.(211+N).0.0/16.
# The tests use 2 for a second host and 3 for a single-node Docker Swarm (never the main engine).
# It has its own socket, data root, exec root (so its own managed containerd), pid file, an empty config file
# (so /etc/docker/daemon.json never applies), no default bridge and no iptables rules, its own address pool
# for user-defined networks, and its own network namespace, so nothing of it reaches the main engine's
# interfaces or routes. Run as root.
set -euo pipefail
INDEX=${2:-2}
case "$INDEX" in [2-9]) ;; *) echo "dockerd2: engine number must be 2..9, not $INDEX" >&2; exit 2 ;; esac
NAME=reconciler-test-$INDEX
SOCK=/run/$NAME.sock
# The main engine, which has the base image: the caller's DOCKER_HOST unless that is us.
MAIN_HOST=${DOCKER_HOST:-unix:///var/run/docker.sock}
[ "$MAIN_HOST" != "unix://$SOCK" ] || MAIN_HOST=unix:///var/run/docker.sock
export DOCKER_HOST=unix://$SOCK
DATA_ROOT=/var/lib/$NAME
EXEC_ROOT=/run/$NAME
PIDFILE=/run/$NAME.pid
CONFIG=/run/$NAME.json
LOG=/var/log/$NAME.log
BASE_IMAGE=reconciler-test/busybox:latest
WAIT=${DOCKERD2_WAIT:-60}

answers() { docker info >/dev/null 2>&1; }

# Whether a process is ours: its command line names our exec root (never the main engine, whatever pid files
# say: pids are reused).
ours() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$EXEC_ROOT"; }

# The pid of our dockerd, if one runs: the pid file's, else one that has not written its pid file yet.
engine_pid() {
  local pid
  for pid in $(cat "$PIDFILE" 2>/dev/null) $(pgrep -x dockerd); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && ours "$pid"; then echo "$pid"; return 0; fi
  done
  return 1
}

# Its managed containerd (config under our exec root).
containerd_pid() {
  local pid
  for pid in $(cat "$EXEC_ROOT/containerd/containerd.pid" 2>/dev/null); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = containerd ] && ours "$pid"; then echo "$pid"; return 0; fi
  done
  return 1
}

fail() {
  echo "dockerd2: $1; last lines of $LOG:" >&2
  tail -20 "$LOG" >&2 || true
  exit 1
}

# The base image the tests use, under both of its names (the example app names busybox:1.36).
load_base_image() {
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    DOCKER_HOST=$MAIN_HOST docker save "$BASE_IMAGE" | docker load -q >/dev/null
  fi
  docker image inspect busybox:1.36 >/dev/null 2>&1 || docker tag "$BASE_IMAGE" busybox:1.36
}

# Its own network namespace: dockerd deletes the host's `docker0` when it starts with `--bridge none` (and
# when it clears a stale default bridge with custom address pools), which would break the main engine. In a
# namespace of its own it only ever sees its own interfaces. The unix socket is on the shared filesystem.
# (nsenter, not `ip netns exec`: that remounts /sys, which hides the cgroup mounts dockerd needs.)
netns() {
  ip netns list | grep -qw "^$NAME" || ip netns add "$NAME"
  ip netns exec "$NAME" ip link set lo up
}

launch() {
  netns
  rm -f "$PIDFILE"
  mkdir -p "$DATA_ROOT" "$EXEC_ROOT"
  echo '{}' >"$CONFIG"
  # No --containerd: dockerd starts its own containerd, with its socket and state under the exec root and
  # its content under the data root, apart from the main engine's. setsid, and no descriptor of ours or our
  # caller's: the engine outlives the caller, a caller capturing our output does not wait for the engine, and
  # a lock file held open by us (fd 9) or by the caller is never held for the engine's whole life.
  (
    for fd in /proc/$BASHPID/fd/*; do
      fd=${fd##*/}
      [ "$fd" -le 2 ] || eval "exec $fd>&-"
    done
    exec setsid nsenter --net="/run/netns/$NAME" dockerd \
      --host "unix://$SOCK" \
      --data-root "$DATA_ROOT" \
      --exec-root "$EXEC_ROOT" \
      --pidfile "$PIDFILE" \
      --config-file "$CONFIG" \
      --bridge none \
      --iptables=false \
      --ip-masq=false \
      --default-address-pool base=10.$((211 + INDEX)).0.0/16,size=24 \
      --storage-driver=vfs \
      </dev/null >>"$LOG" 2>&1
  ) &
}

start() {
  if answers; then load_base_image; return 0; fi
  [ "$(id -u)" = 0 ] || { echo "dockerd2: starting a Docker Engine needs root" >&2; exit 1; }
  local launched= deadline=$((SECONDS + WAIT))
  until answers; do
    # An engine of ours that does not answer is starting or shutting down: wait for it, or launch anew once
    # it has gone.
    if ! engine_pid >/dev/null; then
      [ -z "$launched" ] || fail "dockerd exited while starting"
      launch
      launched=1
    fi
    [ $SECONDS -lt $deadline ] || fail "the engine did not answer on $SOCK within ${WAIT}s"
    sleep 0.2
  done
  load_base_image
}

stop() {
  local pid cpid deadline
  cpid=$(containerd_pid) || cpid=
  if pid=$(engine_pid); then
    kill -TERM "$pid"
    # dockerd stops running containers first (up to their stop timeout, 10 s by default), then exits.
    deadline=$((SECONDS + WAIT))
    while kill -0 "$pid" 2>/dev/null; do
      [ $SECONDS -lt $deadline ] || fail "dockerd (pid $pid) did not exit within ${WAIT}s of SIGTERM"
      sleep 0.2
    done
  fi
  rm -f "$PIDFILE"
  # Its managed containerd follows it; wait for that too, so a start right after gets a fresh one.
  if [ -n "$cpid" ]; then
    deadline=$((SECONDS + WAIT))
    while kill -0 "$cpid" 2>/dev/null; do
      [ $SECONDS -lt $deadline ] || fail "containerd (pid $cpid) did not exit within ${WAIT}s"
      sleep 0.2
    done
  fi
}

# One caller at a time: a start must not race a stop (tests of several sessions share this engine). The
# engine must not inherit this descriptor (see launch), or it would hold the lock for its whole life.
exec 9>"/run/$NAME.script.lock"
flock -w "$((3 * WAIT))" 9 || { echo "dockerd2: another dockerd2.sh kept /run/$NAME.script.lock" >&2; exit 1; }

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  *) echo "usage: $0 [start|stop|restart] [N]" >&2; exit 2 ;;
esac
