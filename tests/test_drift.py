"""Pure drift comparisons: limits, restart policy, networks, network/volume options, foreign containers."""

from __future__ import annotations

import copy
from typing import Any

from reconciler import drift
from reconciler import labels as L
from reconciler.plan import LiveContainer, LiveProject, make_plan
from reconciler.spec import NetworkSpec, ProjectSpec, VolumeSpec, container_request, project_spec
from reconciler.status import DriftReason
from tests.converge.helpers import Rendered

MODEL: dict[str, Any] = {
    "name": "app",
    "services": {
        "web": {
            "image": "web:1",
            "mem_limit": "64m",
            "restart": "always",
            "networks": {"default": None, "back": None},
        },
    },
    "networks": {"default": {"name": "app_default"}, "back": {"name": "app_back"}},
    "volumes": {"data": {"name": "app_data"}},
}
OURS = {L.PROJECT: "app", L.MANAGED: "true"}


def spec_of(model: dict[str, Any] | None = None) -> ProjectSpec:
    return project_spec(Rendered("app", "/src", ("/src/compose.yaml",), copy.deepcopy(model or MODEL)))


def live_web(spec: ProjectSpec, **over: Any) -> LiveContainer:
    """The container `up` would create for web, as observe reports it, with ``over`` applied."""
    svc = spec.service("web")
    assert svc is not None
    req = container_request(spec, svc, 1, image_id="sha256:1")
    host = {k: req.body["HostConfig"].get(k) for k in drift.HOST_KEYS}
    host["RestartPolicy"] = {"Name": "always", "MaximumRetryCount": 0}
    host["MemorySwap"] = 2 * (host["Memory"] or 0)  # what Docker derives at create
    base: dict[str, Any] = {
        "id": "c1",
        "name": "app-web-1",
        "project": "app",
        "service": "web",
        "number": 1,
        "state": "running",
        "labels": dict(req.body["Labels"]),
        "networks": ("app_back", "app_default"),
        "host": host,
    }
    if "host" in over and over["host"] is not None:
        host.update(over.pop("host"))
    return LiveContainer(**{**base, **over})


def reasons(spec: ProjectSpec, c: LiveContainer, **project: Any) -> set[DriftReason]:
    return {d.reason for d in make_plan(spec, LiveProject("app", (c,), **project)).drifts()}


def test_a_container_as_created_has_no_drift() -> None:
    """Docker's derived swap limit, its "no" restart policy and unknown facts are never drift."""
    spec = spec_of()
    assert reasons(spec, live_web(spec)) == set()
    assert reasons(spec, live_web(spec, host={"MemorySwap": -1})) == set()
    assert reasons(spec, live_web(spec, host=None, networks=None)) == set()
    no_limits = copy.deepcopy(MODEL)
    del no_limits["services"]["web"]["mem_limit"], no_limits["services"]["web"]["restart"]
    bare = spec_of(no_limits)
    host = {"Memory": 0, "MemorySwap": 0, "PidsLimit": None, "RestartPolicy": {"Name": "no"}}
    assert reasons(bare, live_web(bare, host=host)) == set()


def test_each_updated_limit_is_limits_drift() -> None:
    """Every `docker update` limit counts, and the detail names it with both values."""
    spec = spec_of()
    for key, value in (
        ("Memory", 32 << 20),
        ("MemoryReservation", 16 << 20),
        ("MemorySwap", 512 << 20),
        ("NanoCpus", 500_000_000),
        ("CpuShares", 512),
        ("CpusetCpus", "0"),
        ("PidsLimit", 50),
        ("BlkioWeight", 300),
    ):
        plan = make_plan(spec, LiveProject("app", (live_web(spec, host={key: value}),)))
        assert [d.reason for d in plan.drifts()] == [DriftReason.LIMITS], key
        assert key in plan.drifts()[0].detail


def test_a_limit_the_kernel_discarded_is_not_drift() -> None:
    """Docker drops a limit the kernel cannot enforce (live 0 or -1): no drift, or healing would loop."""
    spec = spec_of()
    assert reasons(spec, live_web(spec, host={"Memory": 0, "MemorySwap": -1, "PidsLimit": -1})) == set()
    assert drift.limits_diff({"PidsLimit": 100}, {"PidsLimit": None}) == []
    assert drift.limits_diff({"PidsLimit": 100}, {"PidsLimit": 50}) == ["PidsLimit 100 -> 50"]


def test_restart_policy_and_networks() -> None:
    """A changed restart policy, a lost network and a hand-connected one are each their own reason."""
    spec = spec_of()
    changed = live_web(spec, host={"RestartPolicy": {"Name": "no", "MaximumRetryCount": 0}})
    assert reasons(spec, changed) == {DriftReason.RESTART_POLICY}
    assert drift.restart_diff({"Name": "always"}, {"Name": "no"}) == "always -> no"
    assert reasons(spec, live_web(spec, networks=("app_default",))) == {DriftReason.NETWORKS}
    assert drift.networks_diff(["a", "b"], ["b", "c"]) == ["disconnected from a", "connected by hand to c"]


def test_drift_of_a_changed_config_is_config_only() -> None:
    """A container the config no longer matches is recreated for config; its limits are not listed too."""
    spec = spec_of()
    old = live_web(spec, labels={**live_web(spec).labels, L.CONFIG_HASH: "0" * 64}, host={"Memory": 1})
    assert reasons(spec, old) == {DriftReason.CONFIG}


def test_network_and_volume_options_are_reported_not_acted_on() -> None:
    """A network or volume we created with other options is a drift of its own, never a change."""
    spec = spec_of()
    net = {"Name": "app_default", "Driver": "bridge", "Options": {}, "IPAM": {"Driver": "default"}}
    other = {**net, "Name": "app_back", "Internal": True, "Labels": OURS}
    vol = {"Name": "app_data", "Driver": "local", "Options": {"type": "tmpfs"}, "Labels": OURS}
    c = live_web(spec)
    plan = make_plan(
        spec, LiveProject("app", (c,), networks=({**net, "Labels": OURS}, other), volumes=(vol,))
    )
    assert plan.is_noop
    assert [(d.service, d.reason) for d in plan.drifts()] == [
        ("network:app_back", DriftReason.NETWORK_OPTIONS),
        ("volume:app_data", DriftReason.VOLUME_OPTIONS),
    ]
    assert "docker network rm app_back" in plan.drifts()[0].detail
    assert "never recreated" in plan.drifts()[1].detail
    assert DriftReason.NETWORK_OPTIONS.reported_only and not DriftReason.LIMITS.reported_only
    # Not made by us (no managed label): adopted as it is, its options are nobody's drift.
    assert not drift.object_drifts(spec, [{**other, "Labels": {L.PROJECT: "app"}}], [])


def test_network_option_comparisons() -> None:
    """Docker's defaults (bridge, default IPAM, the gateway it picked) are no drift; config values are."""
    spec = NetworkSpec("default", "n", ipam={"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24"}]})
    live = {
        "Driver": "bridge",
        "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/24", "Gateway": "g"}]},
    }
    assert drift.network_diff(spec, live) == []
    moved = {**live, "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.8.0.0/24"}]}}
    assert drift.network_diff(spec, moved) == ["ipam"]
    labelled = NetworkSpec(
        "default", "n", driver="bridge", options={"a": "1"}, attachable=True, labels={"x": "1"}
    )
    assert (
        drift.network_diff(
            labelled, {"Driver": "bridge", "Options": {"a": "1"}, "Attachable": True, "Labels": {"x": "1"}}
        )
        == []
    )
    assert drift.network_diff(labelled, {"Driver": "macvlan"}) == [
        "driver bridge -> macvlan",
        "driver_opts",
        "attachable true -> false",
        "label x",
    ]
    assert drift.volume_diff(VolumeSpec("d", "d"), {"Driver": "local", "Options": None}) == []


def test_compose_up_by_hand_is_foreign_only_in_a_project_proven_ours() -> None:
    """Compose's hash without our labels is foreign when another object of the project is ours; an older
    release's container (managed, no owner) is adopted; with no proof it stays a config drift."""
    spec = spec_of()
    compose_labels = {L.PROJECT: "app", L.SERVICE: "web", L.CONTAINER_NUMBER: "1", L.CONFIG_HASH: "f" * 64}
    by_hand = live_web(spec, labels=compose_labels)
    ours_net = {"Name": "app_default", "Labels": OURS}
    assert reasons(spec, by_hand, networks=(ours_net,)) == {DriftReason.FOREIGN}
    plan = make_plan(spec, LiveProject("app", (by_hand,), networks=(ours_net,)))
    assert "changed by `docker compose` by hand" in plan.drifts()[0].detail
    assert reasons(spec, by_hand) == {DriftReason.CONFIG}
    older = live_web(spec)
    assert L.OWNER not in older.labels and older.labels[L.MANAGED] == "true"
    assert reasons(spec, older, networks=(ours_net,)) == set()
