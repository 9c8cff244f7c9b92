"""The status page: escaping and links (pure rendering), then the real page in headless Chromium."""

from __future__ import annotations

import dataclasses
import html
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reconciler.report.page import render_page

from .conftest import FAILURE, NASTY_BRANCH, PREVIEW_URL, Live, preview, sample_environments, staging

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def test_untrusted_text_is_escaped() -> None:
    """Branch names, errors and drift details are HTML-escaped; no markup from them survives."""
    evil = dataclasses.replace(
        staging(),
        branch=NASTY_BRANCH,
        error="<img src=x onerror=alert(1)>",
        suspend_reason='"><b>bold</b>',
        suspended=True,
    )
    page = render_page([evil], docker_up=True, generated_at=0.0)
    assert "<script>" not in page
    assert "<img" not in page
    assert "<b>bold</b>" not in page
    assert html.escape(NASTY_BRANCH) in page
    assert html.escape("<img src=x onerror=alert(1)>") in page


def test_only_web_urls_become_links() -> None:
    """An http(s) URL is a link; a `javascript:` URL is shown as text, never as an href."""
    good = preview()
    bad = dataclasses.replace(preview(), project="test-x", url="javascript:alert(document.cookie)")
    page = render_page([good, bad], docker_up=True, generated_at=0.0)
    assert f'href="{PREVIEW_URL}"' in page
    assert 'href="javascript:' not in page
    assert "javascript:alert(document.cookie)" in page


def test_page_shows_failure_docker_state_and_refresh() -> None:
    """The failed deploy's error, Docker's state, and a meta refresh are on the page; no external assets."""
    page = render_page(sample_environments(), docker_up=False, generated_at=1_700_000_000.0)
    assert html.escape(FAILURE) in page
    assert "Docker down" in page
    assert "2023-11-14 22:13:20 UTC" in page
    assert re.search(r'<meta http-equiv="refresh" content="\d+">', page)
    assert not re.search(
        r'(src|href)="(https?:)?//',
        page.replace(f'href="{PREVIEW_URL}"', "").replace('href="https://mrs.example.org"', ""),
    )
    assert "<script" not in page.lower()


def test_empty_page() -> None:
    """With no environments the page says so."""
    assert "No environments yet." in render_page([], docker_up=True, generated_at=0.0)


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert shutil.which(CHROMIUM), "chromium is required (Debian package `chromium`)"
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.slow
def test_status_page_in_headless_chromium(live: Live, tmp_path: Path) -> None:
    """Chromium renders / with every environment, the preview's link and the failed deploy's message."""
    url = live.server.url + "/"
    dom = _chromium("--dump-dom", url, profile=tmp_path / "profile").stdout
    for project in ("mrs-production", "mrs-staging", "test-feature-login"):
        assert project in dom
    for environment in ("production", "staging", "preview"):
        assert f"<strong>{environment}</strong>" in dom
    assert f'href="{PREVIEW_URL}"' in dom
    assert html.escape(FAILURE, quote=False) in dom
    assert "<script>alert" not in dom  # the branch name stayed text

    shot = tmp_path / "page.png"
    _chromium(f"--screenshot={shot}", "--window-size=1400,900", url, profile=tmp_path / "profile2")
    assert shot.exists()
    assert shot.stat().st_size > 1000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
