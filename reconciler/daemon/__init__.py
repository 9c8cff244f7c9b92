"""The GitOps daemon: git poller, per-environment workers, drift watcher and HTTP server (issue 4).

``Daemon`` wires the pipeline source → render → observe → plan → apply → report; ``commands/daemon.py`` is
its CLI.
"""
