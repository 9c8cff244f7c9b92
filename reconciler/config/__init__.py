"""Load and validate ``environments.yaml`` into frozen dataclasses; every error names file, line and key.

Called by the daemon and by the CLI commands that take ``-c FILE``. The reference is docs/environments.md.
"""

from reconciler.config.globs import glob_problem
from reconciler.config.model import AppConfig, Config, EnvConfig
from reconciler.config.parser import load_config
from reconciler.config.units import parse_duration

__all__ = ["AppConfig", "Config", "EnvConfig", "glob_problem", "load_config", "parse_duration"]
