"""reconciler: a GitOps daemon for Docker Compose (git branches -> compose stacks on one Docker host)."""

__version__ = "0.1.0"
