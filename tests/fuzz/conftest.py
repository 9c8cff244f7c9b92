"""The daemon test of the fuzz suite uses the daemon tests' fixtures: real git repositories, real Docker."""

from tests.daemon.conftest import cleanup, docker_client, repo

__all__ = ["cleanup", "docker_client", "repo"]
