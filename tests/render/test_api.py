"""The render API as other stages use it: inline documents, result fields, repeatability, errors."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.errors import ComposeError
from reconciler.render import RenderOptions, render, unescape_dollars


def write(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


BASE = """
services:
  web:
    image: nginx:${TAG:-1}
    command: ["sh", "-c", "echo $$HOME"]
    ports: ["8080:80"]
    environment: [A=1]
"""


def test_result_fields(tmp_path: Path) -> None:
    """The result carries the validated name, absolute project dir and files, and the variables used."""
    root = write(tmp_path / "Shop-Front", {"compose.yaml": BASE, ".env": "TAG=2\n"})
    project = render(RenderOptions(working_dir=str(root), environ={"HOME": "/root"}))
    assert project.name == "shop-front"
    assert project.working_dir == str(root)
    assert project.config_files == (str(root / "compose.yaml"),)
    assert project.environment["TAG"] == "2"
    assert project.environment["COMPOSE_PROJECT_NAME"] == "shop-front"
    assert project.model["services"]["web"]["image"] == "nginx:2"


def test_inline_documents_merge_after_files(tmp_path: Path) -> None:
    """Inline documents (e.g. from environments.yaml) merge after the files, in order."""
    root = write(tmp_path / "app", {"compose.yaml": BASE})
    project = render(
        RenderOptions(
            files=("compose.yaml",),
            working_dir=str(root),
            inline=(
                ("environments.yaml: production.override", {"services": {"web": {"environment": {"B": 2}}}}),
                ("environments.yaml: production.ports", {"services": {"web": {"ports": ["9090:80"]}}}),
            ),
        )
    )
    web = project.model["services"]["web"]
    assert web["environment"] == {"A": "1", "B": "2"}
    assert [p["published"] for p in web["ports"]] == ["8080", "9090"]


def test_inline_document_errors_name_the_label(tmp_path: Path) -> None:
    """A bad inline document is reported with its label."""
    root = write(tmp_path / "app", {"compose.yaml": BASE})
    label = "environments.yaml: staging.override"
    with pytest.raises(ComposeError) as raised:
        render(
            RenderOptions(
                files=("compose.yaml",),
                working_dir=str(root),
                inline=((label, {"services": {"web": {"replicas": 2}}}),),
            )
        )
    assert str(raised.value).startswith(f"{label}, service 'web', key 'replicas'")


def test_rendering_twice_gives_the_same_model(tmp_path: Path) -> None:
    """Parsed files are cached between renders; nothing a render does may leak into the next one."""
    root = write(
        tmp_path / "app",
        {
            "compose.yaml": BASE + "  worker:\n    extends: web\n    ports: !reset []\n",
            "override.yaml": "services:\n  web:\n    ports: !override ['1:1']\n    environment: {C: x}\n",
        },
    )
    opts = RenderOptions(files=("compose.yaml", "override.yaml"), working_dir=str(root))
    first = render(opts)
    snapshot = copy.deepcopy(first.model)
    second = render(opts)
    assert second.model == snapshot == first.model


def test_model_escapes_dollars_like_compose(tmp_path: Path) -> None:
    """The model doubles `$` as compose prints it; unescape_dollars gives the container's value."""
    root = write(tmp_path / "app", {"compose.yaml": BASE})
    project = render(RenderOptions(files=("compose.yaml",), working_dir=str(root)))
    command = project.model["services"]["web"]["command"]
    assert command == ["sh", "-c", "echo $$HOME"]
    assert unescape_dollars(command) == ["sh", "-c", "echo $HOME"]


def test_environ_is_the_only_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The renderer reads variables from `environ` only, never from os.environ."""
    monkeypatch.setenv("TAG", "from-os-environ")
    root = write(tmp_path / "app", {"compose.yaml": BASE})
    project = render(RenderOptions(files=("compose.yaml",), working_dir=str(root), environ={}))
    assert project.model["services"]["web"]["image"] == "nginx:1"


yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.text(alphabet="ab:$/{}-=. 0123456789", max_size=12),
)
compose_keys = st.sampled_from(
    ["image", "ports", "volumes", "environment", "labels", "command", "depends_on", "networks", "build",
     "healthcheck", "extends", "deploy", "env_file", "secrets", "x-a", "bogus", "services", "test", "target"]
)  # fmt: skip
documents = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(compose_keys, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(service=st.dictionaries(compose_keys, documents, max_size=5), top=documents)
def test_arbitrary_input_never_crashes(tmp_path: Path, service: dict[str, object], top: object) -> None:
    """Whatever the input, render returns a model or raises a ComposeError that is not an internal error."""
    document = {"services": {"app": service}, "x-top": top}
    try:
        render(RenderOptions(working_dir=str(tmp_path), inline=(("fuzz", document),)))
    except ComposeError as exc:
        assert "internal error" not in str(exc)


yaml_text = st.lists(
    st.sampled_from(
        ["services:", "  app:", "    image: x", "    ports:", "      - 80", "  - a", "x-a: &a {b: 1}",
         "<<: *a", "    <<: *nope", ": :", "'", '"', "{", "[", "!!int x", "!reset", "    environment: {A: 1}",
         "\t", "---", "    volumes: [a:b:c:d]", "services: !override {}", "key: value", "    command: 'x"]
    ),
    max_size=12,
)  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=yaml_text)
def test_arbitrary_yaml_never_crashes(tmp_path: Path, lines: list[str]) -> None:
    """Malformed or odd YAML text gives a model or a located ComposeError, never another exception."""
    (tmp_path / "compose.yaml").write_text("\n".join(lines) + "\n")
    try:
        render(RenderOptions(files=("compose.yaml",), working_dir=str(tmp_path)))
    except ComposeError as exc:
        assert "internal error" not in str(exc)


def test_include_renders_from_a_checkout_as_the_daemon_calls_it(tmp_path: Path) -> None:
    """With the daemon's options (absolute files, project directory = working directory = the checkout, an
    inline override), included files load through the same loader and their paths stay in the checkout."""
    tree = tmp_path / "tree"
    (tree / "db").mkdir(parents=True)
    write(tree, {"compose.yaml": "include: [db/compose.yaml]\nservices:\n  web: {image: busybox}\n"})
    write(
        tree / "db", {"compose.yaml": "services:\n  db:\n    image: busybox\n    volumes: [./data:/data]\n"}
    )
    project = render(
        RenderOptions(
            files=(str(tree / "compose.yaml"),),
            project_directory=str(tree),
            project_name="shop",
            environ={"HOME": "/root"},
            inline=(("environments.yaml: shop.prod.override", {"services": {"db": {"labels": {"a": "b"}}}}),),
            working_dir=str(tree),
        )
    )
    db = project.model["services"]["db"]
    assert db["volumes"][0]["source"] == str(tree / "db" / "data")
    assert db["labels"] == {"a": "b"}
    assert "include" not in project.model
    assert project.config_files == (str(tree / "compose.yaml"),)


def test_include_errors_name_the_included_file(tmp_path: Path) -> None:
    """A bad value inside an included file is reported at that file and line, not the including one."""
    root = write(tmp_path / "app", {"compose.yaml": "include: [sub.yaml]\n"})
    write(root, {"sub.yaml": "services:\n  db:\n    image: busybox\n    ports: [[1]]\n"})
    with pytest.raises(ComposeError) as raised:
        render(RenderOptions(working_dir=str(root), environ={"HOME": "/root"}))
    assert str(raised.value).startswith(f"{root / 'sub.yaml'}:4")


def test_include_of_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """A FIFO (which a plain open would wait on forever) is refused as an included file or env_file."""
    root = write(tmp_path / "app", {"compose.yaml": "include: [pipe.yaml]\n"})
    os.mkfifo(root / "pipe.yaml")
    with pytest.raises(ComposeError, match=r"pipe\.yaml is not a regular file"):
        render(RenderOptions(working_dir=str(root), environ={"HOME": "/root"}))
    write(root, {"compose.yaml": "include:\n  - path: sub.yaml\n    env_file: pipe.yaml\n", "sub.yaml": ""})
    with pytest.raises(ComposeError, match=r"env file .*pipe\.yaml is not a regular file"):
        render(RenderOptions(working_dir=str(root), environ={"HOME": "/root"}))
