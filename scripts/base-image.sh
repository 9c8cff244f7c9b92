#!/usr/bin/env bash
# Build the tiny local base image used by tests and the demo when no registry is reachable:
# FROM scratch + Debian's static busybox. Idempotent (skips when the image exists).
set -euo pipefail
IMAGE="${1:-reconciler-test/busybox:latest}"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi
BUSYBOX=/bin/busybox
if ! file -L "$BUSYBOX" 2>/dev/null | grep -q 'statically linked'; then
  # busybox-static installs /bin/busybox; fall back to its alternative path.
  [ -x /usr/bin/busybox ] && BUSYBOX=/usr/bin/busybox
fi
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$BUSYBOX" "$ctx/busybox"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh"]
DOCKERFILE
docker build -q -t "$IMAGE" "$ctx" >/dev/null
echo "built $IMAGE"
