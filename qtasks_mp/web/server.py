"""The dashboard's Starlette app: pages, the live event stream, /metrics, actions.

    browser ── GET page ─────────> page(): the whole page, rendered on the server
            <─ EventSource /events ─ one `change` event whenever source.version() moves
            ── GET page (X-Live: 1) > the #live part only, swapped in by dash.js

Every value reaches the page through Jinja2 with autoescaping on, and the
Content-Security-Policy allows no inline script, so a task argument such as
`<script>` is shown as text and could not run even if escaping were missed.

Security: `token` (or `None`) guards everything but /static. It is accepted as
`Authorization: Bearer <token>`, as the password of basic auth (any user name: what
a browser's prompt and Prometheus' `basic_auth` send), or once as `?token=`, which
sets an HttpOnly, SameSite=Strict cookie and redirects to drop it from the address.
Actions are POST only and need the CSRF token of the page's form, which is the value
of a SameSite=Strict cookie (a double submit: another site can neither read nor send it).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import math
import secrets
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode
from uuid import UUID

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from ..metrics import CONTENT_TYPE
from .source import FINISHED, STATUSES, Filter, Source

CSRF_COOKIE = "qtasks_mp_csrf"
TOKEN_COOKIE = "qtasks_mp_token"
PAGE_SIZE = 50
TICK_S = 1.0  # how often the event stream looks for a change
KEEPALIVE_S = 15.0

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer makes Chromium post Origin: null
    "Cache-Control": "no-store",
}


# ------------------------------------------------------------------ formatting


def _ago(ts: float | None) -> str:
    if not ts:
        return "-"
    delta = time.time() - ts
    if delta < 1:
        return "now"
    if delta < 60:
        return f"{delta:.0f}s ago"
    if delta < 3600:
        return f"{delta / 60:.0f}m ago"
    if delta < 86400:
        return f"{delta / 3600:.1f}h ago"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] if ts else "-"


def _dur(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 0.001:
        return f"{value * 1e6:.0f} µs"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value = value / 1024  # type: ignore[assignment]
    return "-"


def _figure(value: Any, key: str = "") -> str:
    """A figure from stats() for people: bytes in KiB/MiB/GiB, floats to 3 digits."""
    if key.endswith("bytes") and isinstance(value, int):
        return _bytes(value)
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def chart(
    series: list[tuple[float, int, int]], width: int = 600, height: int = 120
) -> dict[str, Any]:
    """Bars for an inline SVG: done per bucket (failed stacked in red), and the scale."""
    peak = max((d for _, d, _ in series), default=0)
    top = max(1, peak)
    n = max(1, len(series))
    bar_w = width / n
    bars = []
    for i, (t, done, failed) in enumerate(series):
        h = height * done / top
        fh = height * failed / top
        bars.append(
            {
                "x": round(i * bar_w + 0.5, 1),
                "w": round(max(1.0, bar_w - 1), 1),
                "y": round(height - h, 1),
                "h": round(h, 1),
                "fy": round(height - fh, 1),
                "fh": round(fh, 1),
                "title": f"{datetime.fromtimestamp(t):%H:%M:%S}: {done} done, {failed} failed",
            }
        )
    return {"width": width, "height": height, "bars": bars, "peak": peak}


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("qtasks_mp.web", "templates"),
        autoescape=True,  # every {{ value }} is HTML-escaped, in every template
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(ago=_ago, when=_when, dur=_dur, bytes=_bytes, figure=_figure)
    env.globals.update(STATUSES=STATUSES, FINISHED=FINISHED)
    return env


# ------------------------------------------------------------------ security


def _authorized(request_headers: dict[str, str], cookies: dict[str, str], token: str) -> bool:
    auth = request_headers.get("authorization", "")
    given = None
    if auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    elif auth.lower().startswith("basic "):
        try:
            given = base64.b64decode(auth[6:].strip()).decode().partition(":")[2]
        except ValueError:
            given = None
    elif TOKEN_COOKIE in cookies:
        given = cookies[TOKEN_COOKIE]
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class LoopbackHostGate:
    """ASGI middleware for a dashboard on a loopback address without a token: only
    requests whose Host is a loopback name pass. Without it a web page the user visits
    could point its own domain at 127.0.0.1 (DNS rebinding), read every page as
    same-origin, and post with a CSRF token it read."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = ""
            for key, value in scope["headers"]:
                if key == b"host":
                    host = value.decode("latin-1")
                    break
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name not in LOOPBACK_NAMES:
                response = PlainTextResponse(
                    f"400: this dashboard answers only to 127.0.0.1 or localhost, not {host!r} "
                    "(give it a token to serve other names)\n",
                    status_code=400,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class TokenGate:
    """ASGI middleware: every path but /static needs the token (when there is one)."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or scope["path"].startswith("/static/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        given = request.query_params.get("token")
        if given is not None and hmac.compare_digest(given.encode(), self.token.encode()):
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
            target = scope["path"] + (f"?{urlencode(params)}" if params else "")
            response: Response = RedirectResponse(target, status_code=303)
            response.set_cookie(
                TOKEN_COOKIE, self.token, httponly=True, samesite="strict", path="/"
            )
        elif _authorized(dict(request.headers), dict(request.cookies), self.token):
            await self.app(scope, receive, send)
            return
        else:
            response = PlainTextResponse(
                "401: this dashboard needs its token: open it with ?token=..., or send "
                "'Authorization: Bearer <token>' (or basic auth with the token as password)\n",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="qtasks-mp", charset="UTF-8"'},
            )
        await response(scope, receive, send)


def _csrf_ok(request: Request, form_value: str | None) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not form_value or not hmac.compare_digest(cookie, form_value):
        return False
    # Browsers send Origin on a POST; when present it must be this very dashboard.
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


async def _form(request: Request) -> dict[str, list[str]]:
    """An urlencoded form (what the pages post; no multipart parser needed), max 64 KiB."""
    if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
        return {}
    body = await request.body()
    return parse_qs(body[:65536].decode("utf-8", "replace"), keep_blank_values=True)


# ------------------------------------------------------------------ the app


class Dashboard:
    """The pages over one `Source`. `stopping` ends every open event stream.

    Without a token it answers only to loopback host names (`loopback_only`)."""

    def __init__(
        self, source: Source, *, token: str | None = None, loopback_only: bool = True
    ) -> None:
        self.source = source
        self.token = token
        self.env = _env()
        self.stopping = asyncio.Event()
        self.version: Any = None
        self.version_at = 0.0
        self._version_lock = asyncio.Lock()
        from importlib.resources import files

        static = files("qtasks_mp.web").joinpath("static")
        routes = [
            Route("/", self.overview_page),
            Route("/tasks", self.tasks_page),
            Route("/tasks/{uuid}", self.task_page),
            Route("/workers", self.workers_page),
            Route("/events", self.events),
            Route("/metrics", self.metrics_endpoint),
            Route("/actions/purge", self.purge_action, methods=["POST"]),
            Route("/actions/cancel/{uuid}", self.cancel_action, methods=["POST"]),
            Route("/actions/requeue/{uuid}", self.requeue_action, methods=["POST"]),
            Mount("/static", app=StaticFiles(directory=str(static)), name="static"),
        ]
        self.starlette = Starlette(routes=routes)
        self.asgi: ASGIApp = TokenGate(self.starlette, token)
        if token is None and loopback_only:
            self.asgi = LoopbackHostGate(self.asgi)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.asgi(scope, receive, send)

    # -------------------------------------------------------------- rendering

    def _render(self, request: Request, name: str, **context: Any) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        live = request.headers.get("x-live") == "1"
        body = self.env.get_template(name).render(
            title=self.source.title,
            in_process=self.source.in_process,
            can_purge=self.source.can_purge,
            csrf=csrf,
            live_only=live,
            path=request.url.path,
            now=time.time(),
            **context,
        )
        response = HTMLResponse(body, headers=_HEADERS)
        if CSRF_COOKIE not in request.cookies:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/")
        return response

    async def overview_page(self, request: Request) -> Response:
        ov = await self.source.overview()
        return self._render(
            request,
            "overview.html",
            ov=ov,
            chart=chart(ov.series or []),
            timers=self.source.timers(),
            page="overview",
        )

    async def tasks_page(self, request: Request) -> Response:
        q = request.query_params
        status = q.get("status") or None
        if status is not None and status not in STATUSES:
            return PlainTextResponse(f"unknown status {status!r}", status_code=400)
        filt = Filter(status, q.get("name") or None, (q.get("q") or "").strip() or None)
        before_text = q.get("before")
        try:
            before = int(before_text) if before_text else None
        except ValueError:
            return PlainTextResponse("before= takes a row number", status_code=400)
        start = time.perf_counter()
        page = await self.source.page(filt, before, PAGE_SIZE)
        took = time.perf_counter() - start
        keep = {k: v for k, v in (("status", status), ("name", filt.name), ("q", filt.text)) if v}
        older = (
            f"/tasks?{urlencode({**keep, 'before': page.next_before})}"
            if page.next_before
            else None
        )
        return self._render(
            request,
            "tasks.html",
            page="tasks",
            rows=page.rows,
            filt=filt,
            names=await self.source.names(),
            older=older,
            newest=f"/tasks?{urlencode(keep)}" if before is not None else None,
            scanned_to=page.scanned_to,
            took_s=took,
            first_page=before is None,
            purged=q.get("purged"),
            done=q.get("done"),
        )

    async def task_page(self, request: Request) -> Response:
        try:
            uuid = UUID(request.path_params["uuid"])
        except ValueError:
            return PlainTextResponse("not a task id", status_code=404)
        task = await self.source.task(uuid)
        if task is None:
            return self._render(request, "missing.html", uuid=str(uuid), page="tasks")
        done = request.query_params.get("done")
        return self._render(request, "task.html", task=task, page="tasks", done=done)

    async def workers_page(self, request: Request) -> Response:
        return self._render(
            request,
            "workers.html",
            page="workers",
            executors=self.source.workers(),
            timers=self.source.timers(),
        )

    async def metrics_endpoint(self, request: Request) -> Response:
        return Response(await self.source.metrics(), media_type=CONTENT_TYPE)

    # -------------------------------------------------------------- live

    async def current_version(self) -> Any:
        """The source's version, computed at most once a tick for all open streams."""
        async with self._version_lock:
            now = time.monotonic()
            if now - self.version_at >= TICK_S * 0.9:
                self.version = await self.source.version()
                self.version_at = now
            return self.version

    async def events(self, request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            seen = await self.current_version()
            yield "retry: 2000\n\n"
            quiet = 0.0
            while not self.stopping.is_set():
                try:
                    await asyncio.wait_for(self.stopping.wait(), TICK_S)
                    break
                except asyncio.TimeoutError:
                    pass
                if await request.is_disconnected():
                    break
                version = await self.current_version()
                if version != seen:
                    seen = version
                    quiet = 0.0
                    yield f"event: change\ndata: {json.dumps({'at': time.time()})}\n\n"
                else:
                    quiet += TICK_S
                    if quiet >= KEEPALIVE_S:
                        quiet = 0.0
                        yield ": keepalive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    # -------------------------------------------------------------- actions
    #
    # Actions are POST routes that check the page's CSRF token first (behind the
    # token gate, like every page), then redirect (303) to a page that says what
    # happened. Cancel and requeue are `app.cancel(uuid)` / `app.requeue(uuid)`.

    async def cancel_action(self, request: Request) -> Response:
        return await self._task_action(request, "cancel")

    async def requeue_action(self, request: Request) -> Response:
        return await self._task_action(request, "requeue")

    async def _task_action(self, request: Request, action: str) -> Response:
        from ..errors import ArgumentValueError, TaskNotFound

        form = await _form(request)
        if not _csrf_ok(request, next(iter(form.get("csrf", [])), None)):
            return PlainTextResponse(
                "403: the form's CSRF token is missing or stale: reload the page and retry",
                status_code=403,
            )
        try:
            uuid = UUID(request.path_params["uuid"])
        except ValueError:
            return PlainTextResponse("404: not a task id", status_code=404)
        try:
            if action == "cancel":
                done = "cancelled" if await self.source.cancel(uuid) else "already-ended"
            else:
                await self.source.requeue(uuid)
                done = "requeued"
        except TaskNotFound as e:
            return PlainTextResponse(f"404: {e}", status_code=404)
        except ArgumentValueError as e:
            return PlainTextResponse(f"409: {e}", status_code=409)
        back = (form.get("back") or [""])[0]
        if back != "list":
            return RedirectResponse(f"/tasks/{uuid}?{urlencode({'done': done})}", status_code=303)
        return RedirectResponse(f"/tasks?{urlencode({'done': done})}", status_code=303)

    async def purge_action(self, request: Request) -> Response:
        form = await _form(request)
        if not _csrf_ok(request, next(iter(form.get("csrf", [])), None)):
            return PlainTextResponse(
                "403: the form's CSRF token is missing or stale: reload the page and retry",
                status_code=403,
            )
        if not self.source.can_purge:
            return PlainTextResponse(
                "409: this store has no purge (the memory store forgets finished tasks "
                "by its retention limits)",
                status_code=409,
            )
        statuses = sorted({s for s in form.get("status", []) if s in FINISHED}) or list(FINISHED)
        try:
            older_than_s = float((form.get("older_than_s") or ["0"])[0] or "0")
            if not math.isfinite(older_than_s) or older_than_s < 0:
                raise ValueError
        except ValueError:
            return PlainTextResponse("older_than_s takes seconds >= 0", status_code=400)
        count = await self.source.purge(statuses, older_than_s)
        return RedirectResponse(f"/tasks?{urlencode({'purged': count})}", status_code=303)
