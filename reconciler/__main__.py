"""``python -m reconciler``: same as the ``reconciler`` console script."""

from reconciler.cli import entry

entry()
