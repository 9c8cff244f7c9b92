#!/usr/bin/env bash
# Build the local PostgreSQL 15 image used by the scheduled-jobs tests when no registry is reachable:
# a minbase Debian bookworm root filesystem with postgresql-15 (mmdebstrap), imported into Docker.
# Idempotent: skips when the tag exists. Usage: scripts/postgres-image.sh [TAG]
set -euo pipefail
IMAGE="${1:-reconciler-test/postgres:15}"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The entrypoint runs the server as the postgres user (setpriv is in util-linux, which minbase has), after
# initialising an empty data directory; any other command (pg_dump, psql: one-off jobs) runs as given.
cat >"$work/entrypoint.sh" <<'ENTRY'
#!/bin/sh
set -e
PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA
if [ "${1:-}" != postgres ]; then exec "$@"; fi
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown -R postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -U postgres --auth=trust -D "$PGDATA" >/dev/null
  # A test image: trust every client on the container's networks (jobs' one-off containers connect by name).
  echo "host all all all trust" >>"$PGDATA/pg_hba.conf"
fi
exec "$@"
ENTRY
chmod 755 "$work/entrypoint.sh"
mmdebstrap --quiet --variant=minbase --include=postgresql-15 \
  --customize-hook="copy-in $work/entrypoint.sh /usr/local/bin" \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/lib/postgresql/15' \
  --customize-hook='rm -rf "$1"/usr/share/doc/* "$1"/usr/share/man/* "$1"/usr/share/locale/*' \
  bookworm "$work/rootfs.tar"
docker import \
  --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV PGDATA=/var/lib/postgresql/data' \
  --change 'ENTRYPOINT ["/usr/local/bin/entrypoint.sh"]' \
  --change 'CMD ["postgres", "-c", "listen_addresses=*"]' \
  --change 'VOLUME /var/lib/postgresql/data' \
  --change 'EXPOSE 5432' \
  "$work/rootfs.tar" "$IMAGE" >/dev/null
echo "built $IMAGE"
