"""Hostile compose input: every case renders or raises a clear ComposeError, fast, never another exception."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from reconciler.errors import ComposeError
from reconciler.render import RenderOptions, render
from tests.fuzz.guard import answer, budget
from tests.fuzz.strategies import compose_documents, focused_documents, yaml_text

# The crashes fuzzing found (each an internal error before the fix): a clear error or a model now.
KNOWN = {
    "empty service": "services: {app: }\n",
    "cpus .inf": "services: {app: {image: x, cpus: .inf}}\n",
    "cpus 1e400": "services: {app: {image: x, cpus: 1e400}}\n",
    "cast key ''": 'services: {app: {image: x, tty: {"": "1"}}}\n',
    "4301-digit x- value": "services: {app: {image: x}}\nx-big: " + "9" * 4301 + "\n",
    "non-ASCII digit key": 'services: {app: {image: x, labels: {"²": [1]}}}\n',
    "x- value .inf": "services: {app: {image: x}}\nx-a: .inf\n",
    "uid ²": "services: {app: {image: x, secrets: [{source: s, uid: '²'}]}}\nsecrets: {s: {file: ./s}}\n",
}


def render_text(directory: Path, text: str) -> Any:
    (directory / "compose.yaml").write_text(text, encoding="utf-8")
    return answer(lambda: render(RenderOptions(files=("compose.yaml",), working_dir=str(directory))))


@pytest.mark.parametrize("text", KNOWN.values(), ids=KNOWN.keys())
def test_known_findings_give_a_clear_answer(tmp_path: Path, text: str) -> None:
    """Each input that once crashed the renderer now gives a model or a located ComposeError."""
    result = render_text(tmp_path, text)
    if isinstance(result, ComposeError):
        assert result.location.file, str(result)


def test_infinite_cpus_is_refused_like_compose(tmp_path: Path) -> None:
    """`cpus: .inf` cannot be printed as JSON (compose fails too): the error names the service and key."""
    result = render_text(tmp_path, KNOWN["cpus .inf"])
    assert isinstance(result, ComposeError)
    assert result.location.service == "app" and "finite" in str(result)


def test_out_of_range_numbers_stay_strings_as_in_go_yaml(tmp_path: Path) -> None:
    """go-yaml keeps a scalar that overflows int64 and float64 a string; compose prints it as one."""
    result = render_text(tmp_path, KNOWN["4301-digit x- value"])
    assert not isinstance(result, ComposeError), str(result)
    assert result.model["x-big"] == "9" * 4301


@budget(1000)
@given(document=focused_documents, as_file=st.booleans())
def test_mostly_valid_compose_documents(tmp_path: Path, document: dict[str, Any], as_file: bool) -> None:
    """Services with an image and a few keys holding near-miss values reach the casts and normalizations."""
    if as_file:
        render_text(tmp_path, yaml.safe_dump(document, allow_unicode=True))
    else:
        answer(lambda: render(RenderOptions(working_dir=str(tmp_path), inline=(("fuzz", document),))))


@budget(500)
@given(document=compose_documents, as_file=st.booleans())
def test_structured_compose_documents(tmp_path: Path, document: dict[str, Any], as_file: bool) -> None:
    """Plausible-but-hostile documents, inline (as environments.yaml overrides arrive) or as YAML files."""
    if as_file:
        render_text(tmp_path, yaml.safe_dump(document, allow_unicode=True))
    else:
        answer(lambda: render(RenderOptions(working_dir=str(tmp_path), inline=(("fuzz", document),))))


@budget(2000)
@given(text=yaml_text)
@example(text="".join(KNOWN.values()))
def test_arbitrary_yaml_text(tmp_path: Path, text: str) -> None:
    """Anchors, aliases, merge keys, tags and broken syntax: a model or a located ComposeError."""
    render_text(tmp_path, text)


@budget(500)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes(tmp_path: Path, data: bytes) -> None:
    """Not even text: a clear error (not UTF-8, invalid YAML) or a model."""
    (tmp_path / "compose.yaml").write_bytes(data)
    answer(lambda: render(RenderOptions(files=("compose.yaml",), working_dir=str(tmp_path))))


def laughs(levels: int = 9) -> str:
    """The classic "billion laughs": each level lists the previous one nine times."""
    lines = ["services: {app: {image: x}}", 'x-a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghijklmnop"[: levels - 1]:
        lines.append(f"x-{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    return "\n".join(lines) + "\n"


def test_billion_laughs_is_refused(tmp_path: Path) -> None:
    """A few hundred bytes of nested aliases fail at once with a located error (go-yaml's alias budget)."""
    text = laughs()
    assert len(text) < 500
    result = render_text(tmp_path, text)
    assert isinstance(result, ComposeError)
    assert "excessive aliasing" in str(result) and "compose.yaml" in str(result)


def test_modest_aliasing_still_renders(tmp_path: Path) -> None:
    """Anchors used the usual way (a shared block for several services) are not affected by the budget."""
    services = "\n".join(f"  s{i}: *base" for i in range(50))
    text = (
        f"x-base: &base {{image: x, environment: {{A: '1', B: '2'}}, labels: [a=b]}}\nservices:\n{services}\n"
    )
    result = render_text(tmp_path, text)
    assert not isinstance(result, ComposeError), str(result)
    assert len(result.model["services"]) == 50


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    """A compose file over 4 MiB is an error naming the file and the limit, before any parsing."""
    filler = "x-pad: '" + "a" * (4 * 1024 * 1024) + "'\n"
    result = render_text(tmp_path, "services: {app: {image: x}}\n" + filler)
    assert isinstance(result, ComposeError)
    assert "4 MiB" in str(result) and "compose.yaml" in str(result)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize(
    "service",
    [
        "{image: x, extends: {file: /dev/zero, service: a}}",
        "{image: x, extends: {file: /proc/self/environ, service: a}}",
        "{image: x, extends: {file: FIFO, service: a}}",
        "{image: x, env_file: /dev/zero}",
        "{image: x, env_file: FIFO}",
        "{image: x, env_file: [{path: FIFO, required: false}]}",
    ],
)
def test_special_files_are_refused_at_once(tmp_path: Path, fifo: Path, service: str) -> None:
    """extends and env_file never read a FIFO (it would block), a device or /proc (endless): a clear error."""
    result = render_text(tmp_path, f"services:\n  app: {service.replace('FIFO', str(fifo))}\n")
    assert isinstance(result, ComposeError), result
    assert "not a regular file" in str(result)


def test_include_of_a_fifo_is_refused(tmp_path: Path, fifo: Path) -> None:
    """include reads through the same checks."""
    result = render_text(tmp_path, f"include: [{fifo}]\nservices: {{app: {{image: x}}}}\n")
    assert isinstance(result, ComposeError) and "not a regular file" in str(result)


def test_compose_file_that_is_a_fifo(tmp_path: Path, fifo: Path) -> None:
    """Even `-f` pointing at a FIFO answers at once."""
    result = answer(lambda: render(RenderOptions(files=(str(fifo),), working_dir=str(tmp_path))))
    assert isinstance(result, ComposeError) and "not a regular file" in str(result)


def test_dev_null_env_file_reads_as_empty(tmp_path: Path) -> None:
    """`/dev/null` keeps its usual meaning of "no file"."""
    result = render_text(tmp_path, "services: {app: {image: x, env_file: /dev/null}}\n")
    assert not isinstance(result, ComposeError), str(result)


def test_crlf_files_read_as_before(tmp_path: Path) -> None:
    """Files are read as text mode did: CRLF line ends leave no stray carriage return in values."""
    (tmp_path / "app.env").write_bytes(b"A=1\r\nB=two\r\n")
    text = "services:\r\n  app:\r\n    image: x\r\n    env_file: app.env\r\n"
    result = render_text(tmp_path, text)
    assert not isinstance(result, ComposeError), str(result)
    assert result.model["services"]["app"]["environment"] == {"A": "1", "B": "two"}


def test_env_file_option_that_is_a_fifo(tmp_path: Path, fifo: Path) -> None:
    """`--env-file` (the daemon's env_files) pointing at a FIFO answers at once with the file named."""
    (tmp_path / "compose.yaml").write_text("services: {app: {image: x}}\n")
    options = RenderOptions(files=("compose.yaml",), env_files=(str(fifo),), working_dir=str(tmp_path))
    result = answer(lambda: render(options))
    assert isinstance(result, ComposeError)
    assert "not a regular file" in str(result) and str(fifo) in str(result)
