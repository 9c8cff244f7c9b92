"""Hypothesis strategies for plausible-but-hostile input: compose documents, YAML text, branch names."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Strings that broke, or could break, a parser, a cast, a path or a name somewhere.
HOSTILE_STRINGS = (
    "",
    " ",
    "~",
    "null",
    "true",
    "yes",
    ".inf",
    "-.inf",
    ".nan",
    "1e400",
    "-1e400",
    "9" * 4301,
    "0x1F",
    "0o17",
    "0b2",
    "-0",
    "1_000",
    "22:22",
    "2001-12-14",
    "2001-12-14T21:59:43Z",
    "2001-13-45",
    "²",
    "٣",
    "Ⅻ",
    "${A}",
    "$${A}",
    "${A:?boom}",
    "${A:-${B:-c}}",
    "${",
    "$",
    "${A-}",
    "${1}",
    "$$",
    "80:80",
    "80:80/udp",
    "127.0.0.1:1-65536:80",
    "a:b:c:d",
    "1.5g",
    "-1",
    "512m",
    "0.000001",
    "1h30m",
    "../../etc/passwd",
    "/dev/zero",
    "/proc/self/environ",
    "/",
    ".",
    "..",
    "\x00",
    "\u202e",
    "🙂",
    "a" * 300,
    "\t",
    "\n",
    "CMD-SHELL",
    "host",
    "service:x",
    "container:x",
    "none",
    "always",
    "unless-stopped",
    "on-failure:-1",
)

SERVICE_KEYS = (
    "image",
    "build",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "expose",
    "volumes",
    "networks",
    "labels",
    "depends_on",
    "healthcheck",
    "deploy",
    "restart",
    "cpus",
    "mem_limit",
    "tty",
    "stdin_open",
    "user",
    "working_dir",
    "extends",
    "secrets",
    "configs",
    "ulimits",
    "sysctls",
    "logging",
    "extra_hosts",
    "dns",
    "cap_add",
    "profiles",
    "scale",
    "network_mode",
    "pid",
    "ipc",
    "shm_size",
    "tmpfs",
    "devices",
    "init",
    "privileged",
    "read_only",
    "stop_grace_period",
    "stop_signal",
    "container_name",
    "hostname",
    "mac_address",
    "platform",
    "pull_policy",
    "security_opt",
    "annotations",
    "blkio_config",
    "cpu_shares",
    "mem_reservation",
    "oom_score_adj",
    "links",
    "external_links",
    "volumes_from",
    "x-a",
    "",
    "²",
    "<<",
    "target",
    "source",
    "type",
    "published",
    "mode",
    "test",
    "interval",
    "replicas",
    "resources",
    "limits",
    "reservations",
    "condition",
    "file",
    "service",
    "path",
    "required",
    "format",
)
TOP_KEYS = ("services", "volumes", "networks", "secrets", "configs", "name", "x-top", "include", "version")

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(HOSTILE_STRINGS),
)
keys = st.one_of(st.sampled_from(SERVICE_KEYS), st.text(max_size=6))


def values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


service = st.dictionaries(st.sampled_from(SERVICE_KEYS), values(6), max_size=6)
service_names = st.one_of(
    st.sampled_from(("app", "db", "web", "", "A", "a b", "²", "-x")), st.text(max_size=6)
)
compose_documents = st.fixed_dictionaries(
    {
        "services": st.one_of(
            st.dictionaries(service_names, st.one_of(service, values(4)), max_size=3), values(4)
        )
    },
    optional={key: values(8) for key in TOP_KEYS if key != "services"},
)

# Raw YAML fragments: anchors, aliases, merge keys, tags, flow and block styles, broken quoting.
YAML_LINES = (
    "services:",
    "  app:",
    "    image: x",
    "    ports:",
    "      - 80",
    "  - a",
    "x-a: &a {b: 1}",
    "x-b: &b [*a, *a]",
    "<<: *a",
    "    <<: *a",
    "    <<: [*a, *a]",
    "    <<: *nope",
    ": :",
    "'",
    '"',
    "{",
    "[",
    "!!int x",
    "!!float y",
    "!!binary aGk=",
    "!reset",
    "!override",
    "!!set {a}",
    "!custom x",
    "    environment: {A: 1}",
    "\t",
    "---",
    "...",
    "    volumes: [a:b:c:d]",
    "services: !override {}",
    "key: value",
    "    command: 'x",
    "    cpus: .inf",
    "    cpus: 1e400",
    '    tty: {"": "1"}',
    "x-big: " + "9" * 4301,
    '    labels: {"²": [1]}',
    "services: {app: }",
    "    image: &i x",
    "    hostname: *i",
    "? [a, b]",
    "? {a: 1}",
    "  app: &s {image: x}",
    "  web: *s",
    "    extends: {file: /dev/zero, service: a}",
    "    env_file: /dev/zero",
    "include: [/dev/zero]",
    "    healthcheck: {test: [CMD, x], interval: 1e400s}",
    "    deploy: {replicas: 99999999999999999999}",
    "%YAML 1.1",
    "%TAG ! tag:x,2000:",
    "&a",
    "*a",
    "- *b",
    "x-r: &r [*r]",
    "    stop_grace_period: 1e400s",
)
yaml_text = st.lists(st.sampled_from(YAML_LINES), max_size=14).map(lambda lines: "\n".join(lines) + "\n")

# Branch names: unicode, slashes, `..`, long, shell metacharacters, empty slugs, case twins.
BRANCH_PIECES = (
    "main",
    "master",
    "feature/",
    "Feature/",
    "FIX",
    "fix",
    "..",
    ".",
    "/",
    "//",
    "-",
    "_",
    "@{",
    "@",
    "~",
    "^",
    ":",
    "?",
    "*",
    "[",
    "\\",
    " ",
    "$(rm -rf /)",
    "`id`",
    ";",
    "|",
    "&",
    "'",
    '"',
    "\n",
    "\x7f",
    "é",
    "É",
    "ß",
    "İ",
    "😀",
    "\u200b",
    "\u202e",
    ".lock",
    "a" * 60,
    "ü" * 40,
    "0",
    "HEAD",
    "refs/heads/x",
    "---",
)
branch_names = st.one_of(
    st.lists(st.sampled_from(BRANCH_PIECES), min_size=1, max_size=6).map("".join),
    st.text(min_size=1, max_size=40),
    st.text(alphabet="aA-_./", min_size=1, max_size=300),
)

# Mostly-valid services: an image plus a few keys with values close to what each key expects, so cases get
# past the first type check into the casts, merges and normalizations behind it.
durations = st.sampled_from(("1s", "1m30s", "0s", "-1s", "1e400s", "1.5h", "10", "", "1ns", "99999999h"))
PLAUSIBLE: dict[str, st.SearchStrategy[Any]] = {
    "ports": st.lists(
        st.sampled_from(
            (
                "80",
                "80:80",
                "127.0.0.1:8080:80/udp",
                "1-3:1-3",
                "65536:80",
                80,
                "80:80:80:80",
                "[::1]:80:80",
                "-1",
            )
        )
        | st.fixed_dictionaries({"target": scalars}, optional={"published": scalars, "protocol": scalars}),
        max_size=3,
    ),
    "environment": st.dictionaries(st.text(max_size=5), scalars, max_size=3)
    | st.lists(st.sampled_from(("A=1", "A", "=x", "A=${B}", "A=$$B", "A==")), max_size=3),
    "volumes": st.lists(
        st.sampled_from(("./a:/a", "a:/a:ro", "/a", "a:b:c:d", "a:/a:z,ro", ":/a", "./a:", "~/x:/x"))
        | st.fixed_dictionaries(
            {"type": st.sampled_from(("bind", "volume", "tmpfs", "npipe", "x")), "target": scalars},
            optional={"source": scalars, "tmpfs": values(4), "bind": values(4), "read_only": scalars},
        ),
        max_size=3,
    ),
    "healthcheck": st.fixed_dictionaries(
        {},
        optional={
            "test": st.lists(st.sampled_from(("CMD", "CMD-SHELL", "NONE", "x", "")), max_size=3) | scalars,
            "interval": durations | scalars,
            "timeout": durations,
            "retries": scalars,
            "start_period": durations,
            "disable": scalars,
        },
    ),
    "deploy": st.fixed_dictionaries(
        {},
        optional={
            "replicas": scalars,
            "resources": st.fixed_dictionaries(
                {}, optional={"limits": st.dictionaries(st.sampled_from(("cpus", "memory", "pids")), scalars)}
            ),
            "restart_policy": values(4),
            "mode": scalars,
        },
    ),
    "depends_on": st.lists(st.sampled_from(("db", "app", "x", "")), max_size=2)
    | st.dictionaries(
        st.sampled_from(("db", "app")),
        st.fixed_dictionaries({"condition": scalars}, optional={"restart": scalars}),
    ),
    "ulimits": st.dictionaries(
        st.sampled_from(("nofile", "nproc", "")),
        scalars | st.fixed_dictionaries({"soft": scalars, "hard": scalars}),
    ),
    "extends": st.sampled_from(("db", "app", "nope")) | st.fixed_dictionaries({"service": scalars}),
    "logging": st.fixed_dictionaries({}, optional={"driver": scalars, "options": values(4)}),
    "networks": st.lists(st.sampled_from(("default", "front", "")), max_size=2) | values(4),
    "stop_grace_period": durations,
    "mem_limit": st.sampled_from(("512m", "1g", "1e400", "-1", "1.5gb", "0", "9" * 30)),
    "shm_size": st.sampled_from(("64m", "x", "9" * 30)),
}
_REAL_KEYS = [key for key in SERVICE_KEYS[: SERVICE_KEYS.index("x-a")] if key != "image"]
focused_service = st.lists(st.sampled_from(_REAL_KEYS), max_size=3, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries(
        {"image": st.just("busybox"), **{k: PLAUSIBLE.get(k, values(4)) for k in keys}}
    )
)
focused_documents = st.fixed_dictionaries(
    {"services": st.fixed_dictionaries({"app": focused_service}, optional={"db": focused_service})},
    optional={
        "networks": st.just({"front": {}}) | values(4),
        "volumes": st.just({"a": {}}) | values(4),
        "x-top": values(6),
    },
)
