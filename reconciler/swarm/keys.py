"""Which compose service keys the Swarm backend honours, ignores (as `docker stack deploy` does, with a
notice) or refuses. docs/swarm.md lists the same tables; tests/swarm check that every key is in one."""

from __future__ import annotations

# Turned into the service spec (reconciler.swarm.translate).
HONOURED = frozenset(
    {
        "image", "command", "entrypoint", "environment", "ports", "volumes", "tmpfs", "networks",
        "healthcheck", "labels", "user", "working_dir", "hostname", "extra_hosts", "cap_add", "cap_drop",
        "init", "read_only", "tty", "stdin_open", "stop_grace_period", "stop_signal", "sysctls", "ulimits",
        "logging", "dns", "dns_search", "dns_opt", "group_add", "secrets", "configs", "deploy",
    }
)  # fmt: skip

# Ignored, said once per `up` in the log (`up.keys_ignored`) and listed in docs/swarm.md: `docker stack
# deploy` ignores them too, and a stack that used them under compose keeps working without them.
IGNORED = {
    "build": "Swarm runs images, it builds none: the image must exist on the nodes (or in a registry)",
    "restart": "Swarm restarts tasks by deploy.restart_policy (default: condition any)",
    "expose": "every port is reachable on the stack's overlay networks anyway",
    "depends_on": "Swarm starts services in no order (only the condition service_started is accepted)",
    "pull_policy": "Swarm nodes pull the image when they start a task",
    "profiles": "already applied when the project was rendered",
    "develop": "only drives `docker compose watch`",
    "attach": "only steers the log output of a foreground `docker compose up`",
    "platform": "Swarm picks the node's platform from the image",
}

# Refused with the service and the key named: Swarm cannot do what they ask, and running without it could
# break the stack in ways nobody would see at deploy time.
REFUSED = {
    "container_name": "Swarm names the containers of a service itself ({project}_{service}.{n}.{id})",
    "network_mode": "a Swarm service joins overlay networks; it cannot share the host's or another "
    "container's network stack",
    "pid": "a Swarm service cannot share a PID namespace",
    "ipc": "a Swarm service cannot share an IPC namespace",
    "privileged": "Swarm services cannot run privileged",
    "devices": "Swarm services cannot map host devices",
    "links": "use the service name on a shared network instead",
    "external_links": "use the service name on a shared network instead",
    "volumes_from": "Swarm has no volumes_from",
    "mac_address": "Swarm assigns addresses itself",
    "security_opt": "Swarm services take no security options",
    "userns_mode": "Swarm services take no user namespace mode",
    "cgroup_parent": "Swarm services take no cgroup parent",
    "cgroup": "Swarm services take no cgroup namespace mode",
    "shm_size": "Swarm services take no shm size (mount a tmpfs at /dev/shm instead)",
    "mem_limit": "use deploy.resources.limits.memory",
    "memswap_limit": "Swarm has no swap limit",
    "mem_reservation": "use deploy.resources.reservations.memory",
    "cpus": "use deploy.resources.limits.cpus",
    "cpu_shares": "use deploy.resources",
    "cpuset": "use deploy.resources",
    "pids_limit": "use deploy.resources.limits.pids",
    "oom_score_adj": "Swarm services take no OOM score",
    "domainname": "Swarm services take no domain name",
    "scale": "use deploy.replicas",
    "extends": "extends is resolved when rendering; it cannot remain here",
}

# deploy.* keys turned into the service spec; any other deploy key is refused.
DEPLOY_KEYS = frozenset(
    {"mode", "replicas", "labels", "update_config", "rollback_config", "restart_policy", "placement",
     "resources", "endpoint_mode"}
)  # fmt: skip
UPDATE_KEYS = frozenset({"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"})
