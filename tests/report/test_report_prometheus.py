"""Alert rules with promtool, and a real Prometheus scraping the real server (Debian's `prometheus` package).

Both binaries are required, never skipped: CI installs them.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from reconciler.report import Metrics, ServerHandle, StaticView, serve

from .conftest import preview, production, sample_view

ROOT = Path(__file__).resolve().parents[2]
RULES_DIR = ROOT / "compose" / "prometheus"
DASHBOARD = ROOT / "compose" / "grafana" / "dashboards" / "reconciler.json"
PROMTOOL = "/usr/bin/promtool"
PROMETHEUS = "/usr/bin/prometheus"

T = TypeVar("T")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert Path(PROMTOOL).exists(), "promtool is required (Debian package `prometheus`)"
    return subprocess.run(
        [PROMTOOL, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules() -> None:
    """promtool accepts alerts.yml."""
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config() -> None:
    """promtool accepts the ops stack's prometheus.yml (and the rule file it loads)."""
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    """Every alert rule's unit tests in alerts_test.yml pass."""
    result = promtool("test", "rules", "alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_is_tested_firing_and_quiet() -> None:
    """Each alert in alerts.yml has at least one firing and one not-firing expectation."""
    rules = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load((RULES_DIR / "alerts_test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for test in tests:
        for check in test.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert len(alerts) >= 7
    assert alerts == firing == quiet


# -- a real Prometheus -------------------------------------------------------------------------------


@dataclass
class Stack:
    view: StaticView
    metrics: Metrics
    server: ServerHandle
    prometheus: str  # base URL

    def query(self, promql: str) -> dict[str, Any]:
        url = f"{self.prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())  # type: ignore[no-any-return]
        except urllib.error.HTTPError as err:  # 400 for a bad expression: show Prometheus's reason
            return json.loads(err.read())  # type: ignore[no-any-return]

    def api(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.prometheus}{path}", timeout=10) as resp:
            return json.loads(resp.read())  # type: ignore[no-any-return]


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_prometheus(workdir: Path, target_port: int) -> tuple[subprocess.Popen[bytes], str, Path]:
    assert Path(PROMETHEUS).exists(), "prometheus is required (Debian package `prometheus`)"
    shutil.copy(RULES_DIR / "alerts.yml", workdir / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {"job_name": "reconciler", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = workdir / "prometheus.log"
    for _attempt in range(3):  # the free port may be taken between probing and binding
        port = _free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return proc, base, log
            except OSError:
                time.sleep(0.2)
        proc.kill()
        proc.wait()
    pytest.fail("prometheus did not start:\n" + log.read_text())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    view = sample_view()
    metrics = Metrics(view)
    server = serve(view, metrics, "127.0.0.1", 0)
    proc = None
    try:
        proc, base, _log = _start_prometheus(tmp_path_factory.mktemp("prometheus"), server.port)
        yield Stack(view, metrics, server, base)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        server.stop()


def _values(answer: dict[str, Any]) -> dict[str, str]:
    """project (or app) -> value of an instant-vector answer."""
    assert answer["status"] == "success", answer
    return {
        r["metric"].get("project", r["metric"].get("app", "")): r["value"][1]
        for r in answer["data"]["result"]
    }


@pytest.mark.slow
def test_prometheus_scrapes_drift_and_forgets_gone_environments(stack: Stack) -> None:
    """Prometheus sees each environment's drift count; a removed environment's series go stale at once."""
    drift = wait_for(
        "reconciler_environment_drift in Prometheus",
        lambda: _values(stack.query("reconciler_environment_drift")) or None,
    )
    assert drift == {"mrs-production": "0", "mrs-staging": "2", "test-feature-login": "0"}
    stopped = _values(stack.query('reconciler_service_drift{reason="stopped"}'))
    assert stopped == {"mrs-staging": "1"}
    assert _values(stack.query('up{job="reconciler"}')) == {"": "1"}

    stack.view.set_environments([production(), preview()])
    try:
        wait_for(
            "mrs-staging's drift series to disappear",
            lambda: _values(stack.query('reconciler_environment_drift{project="mrs-staging"}')) == {},
        )
        assert _values(stack.query("reconciler_service_drift")) == {}
    finally:
        stack.view.set_environments(sample_view().environments())
    wait_for(
        "mrs-staging to come back",
        lambda: _values(stack.query('reconciler_environment_drift{project="mrs-staging"}')),
    )


@pytest.mark.slow
def test_rules_load_and_alert_on_real_metrics(stack: Stack) -> None:
    """The shipped rules evaluate cleanly on the real exporter's series, and drift/failure alerts trigger."""
    rules = wait_for(
        "every rule evaluated",
        lambda: (
            rs
            if (rs := [r for g in stack.api("/api/v1/rules")["data"]["groups"] for r in g["rules"]])
            and all(r["health"] == "ok" for r in rs)
            else None
        ),
    )
    assert len(rules) >= 7

    # A failure after the zero series were scraped: increase() > 0 and the alert fires (no `for`).
    wait_for(
        "the zero failure series",
        lambda: _values(stack.query('reconciler_reconcile_total{result="failure",project="mrs-staging"}')),
    )
    stack.metrics.reconcile("mrs", "staging", "mrs-staging", "failure", 42.0)

    def alerts() -> dict[tuple[str, str], str]:
        found = stack.api("/api/v1/alerts")["data"]["alerts"]
        return {(a["labels"]["alertname"], a["labels"].get("project", "")): a["state"] for a in found}

    wait_for(
        "ReconcilerDeployFailing firing for mrs-staging",
        lambda: alerts().get(("ReconcilerDeployFailing", "mrs-staging")) == "firing",
    )
    state = alerts()
    assert state[("ReconcilerDriftDetected", "mrs-staging")] == "pending"  # `for: 10m`
    assert state[("ReconcilerOutOfSync", "mrs-staging")] == "pending"  # `for: 30m`
    assert ("ReconcilerDriftDetected", "mrs-production") not in state
    assert ("ReconcilerDockerDown", "") not in state


def _dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard target, with Grafana's variables filled in."""
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$app", ".*")
            assert "$" not in expr, expr
            out.append((panel["title"], expr))
    return out


@pytest.mark.slow
def test_dashboard_queries_run_on_real_prometheus(stack: Stack) -> None:
    """Every Grafana panel's query is valid PromQL, and the environment tables return rows."""
    titles = {title for title, _ in _dashboard_queries()}
    for required in (
        "Environments",
        "Drift by reason",
        "Deploy duration",
        "Deploy failures",
        "Git poll errors",
    ):
        assert required in titles
    stack.metrics.git_poll("mrs", False, 1.5)
    for title, expr in _dashboard_queries():
        answer = stack.query(expr)
        assert answer["status"] == "success", (title, expr, answer)
        if title in ("Environments", "Drifting services", "Docker"):
            wait_for(f"rows for {title}: {expr}", lambda e=expr: stack.query(e)["data"]["result"])
