"""scripts/postgres-image.sh: a PostgreSQL 15 image from Debian packages, cached by tag, whose tools work."""

from __future__ import annotations

import secrets
import time

from tests.jobs.conftest import ROOT, sh


def test_image_is_cached_and_its_tools_work(pg_image: str) -> None:
    """A second run is a no-op; the server starts; pg_dump, pg_restore and psql copy and read a database."""
    again = sh("bash", str(ROOT / "scripts" / "postgres-image.sh"), pg_image)
    assert again.stdout == ""  # cached: nothing built
    name = f"tjob-image-{secrets.token_hex(3)}"
    sh("docker", "run", "-d", "--name", name, pg_image)
    try:
        deadline = time.monotonic() + 120
        while sh("docker", "exec", name, "pg_isready", "-q", "-U", "postgres", check=False).returncode:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        # Dump, drop the original, restore it under its own name (--create), read it back over TCP.
        script = (
            "set -e; psql -U postgres -qc 'CREATE DATABASE src'; "
            "psql -U postgres -d src -qc 'CREATE TABLE t AS SELECT generate_series(1, 5) AS n'; "
            "pg_dump -Fc -U postgres src > /tmp/d; dropdb -U postgres src; "
            "pg_restore -U postgres -d postgres --create /tmp/d; "
            "psql -U postgres -h 127.0.0.1 -d src -tAc 'SELECT sum(n) FROM t'"
        )
        out = sh("docker", "exec", name, "sh", "-c", script)
        assert out.stdout.strip() == "15"
        user = sh("docker", "exec", name, "stat", "-c", "%U", "/proc/1")
        assert "postgres" in user.stdout
    finally:
        sh("docker", "rm", "-fv", name, check=False)
