"""The deployer's checks of a `backend: swarm` revision before anything changes: refusals and hooks."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from tests.swarm.test_translate import model


def test_a_swarm_environment_with_hooks_is_refused_before_anything_changes(tmp_path: Any) -> None:
    import yaml

    from reconciler.config import load_config
    from reconciler.daemon.deploy import Deployer, Resolved, Target
    from reconciler.errors import ConfigError

    doc = {
        "state_dir": str(tmp_path / "state"),
        "apps": {
            "shop": {
                "repo": str(tmp_path / "repo.git"),
                "environments": {
                    "production": {
                        "branch": "master",
                        "project": "shop",
                        "compose": ["compose.yaml"],
                        "backend": "swarm",
                        "hooks": {"pre_deploy": [{"service": "web", "run": "true"}]},
                    }
                },
            }
        },
    }
    path = tmp_path / "environments.yaml"
    path.write_text(yaml.safe_dump(doc))
    app = load_config(path).apps[0]
    target = Target(app, app.environments[0], "master", "shop", "master")
    resolved = Resolved("shop", str(tmp_path), (), model(web={"image": "a"}), "0" * 40, "tree")
    with pytest.raises(ConfigError, match="hooks need backend: compose"):
        Deployer._check_swarm(target, resolved)
    plain = Target(
        app, replace(app.environments[0], hooks=type(app.environments[0].hooks)()), "master", "shop", "master"
    )
    assert Deployer._check_swarm(plain, resolved) == {"web"}
