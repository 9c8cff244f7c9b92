"""`reconciler render`: print the merged compose model, like `docker compose config`.

Called by ``reconciler.cli``; a thin shell over ``reconciler.render.render`` (the CLI owns os.environ).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import yaml

from reconciler.render import RenderOptions, render


class _Dumper(yaml.SafeDumper):
    """Block-style YAML that keeps our key order and never emits anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(model: dict[str, Any]) -> str:
    return yaml.dump(model, Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


def main(args: argparse.Namespace) -> int:
    if args.target:
        return _target(args)
    project = render(
        RenderOptions(
            files=tuple(args.files or ()),
            project_directory=args.project_directory,
            env_files=tuple(args.env_files or ()),
            profiles=tuple(args.profiles or ()),
            project_name=args.project,
            environ=dict(os.environ),
            working_dir=os.getcwd(),
        )
    )
    if args.format == "json":
        sys.stdout.write(json.dumps(project.model, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(to_yaml(project.model))
    return 0


def _target(args: argparse.Namespace) -> int:
    """TARGET's commit as the daemon would deploy it; its policy violations go to stderr."""
    from reconciler.commands.revision import masked, policy_violations, target_revision
    from reconciler.secrets import scrub_value

    daemon, target, resolved = target_revision(args)
    # Masked in the model, not in its text: YAML may quote, escape or fold a value across lines.
    model = resolved.model if args.show_secrets else scrub_value(resolved.model)
    json_text = args.format == "json"
    text = json.dumps(model, indent=2, ensure_ascii=False) + "\n" if json_text else to_yaml(model)
    sys.stdout.write(masked(text, args))
    sys.stdout.flush()
    refusal = policy_violations(daemon, target, resolved)
    if refusal:
        print(f"reconciler render: {masked(refusal, args)}", file=sys.stderr)
    return 0
