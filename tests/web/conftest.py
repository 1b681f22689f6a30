"""The dashboard tests' browser: Debian's chromium (installed by .ci/browser.sh)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def chromium() -> str:
    """The chromium executable; the test FAILS (never skips) when it is missing."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is not installed: run .ci/browser.sh (as root)")
    return path
