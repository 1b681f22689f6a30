"""Helpers of the dashboard tests: plain HTTP calls, where screenshots go."""

from __future__ import annotations

import asyncio
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def screenshots_wanted() -> bool:
    """Only QTASKS_MP_SCREENSHOTS=1 rewrites docs/img/, so CI leaves the tree clean."""
    return os.environ.get("QTASKS_MP_SCREENSHOTS") == "1"


@dataclass
class Reply:
    status: int
    body: str
    headers: dict[str, str]  # names in lower case


def _fetch(url: str, data: bytes | None, headers: dict[str, str]) -> Reply:
    request = urllib.request.Request(url, data=data, headers=headers)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=10) as r:
            return Reply(r.status, r.read().decode(), {k.lower(): v for k, v in r.headers.items()})
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.read().decode(), {k.lower(): v for k, v in e.headers.items()})
    except urllib.error.URLError as e:  # refused: nobody listens
        return Reply(0, str(e.reason), {})


async def fetch(
    url: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> Reply:
    """One HTTP request in a thread (the server runs in this loop), no redirects followed."""
    return await asyncio.to_thread(_fetch, url, data, headers or {})
