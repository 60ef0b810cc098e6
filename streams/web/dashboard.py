"""``GET /dashboard``: the operator's page, and the scripts it loads from the worker itself (no CDN: a
worker may run offline). The page fetches JSON (``/dashboard/data``, ``/drift``, ``/models``, ``/health``)
and redraws its plots with Plotly; what each plot shows is in docs/dashboard.md. Each function returns the
view's class; `streams.app` mounts it at its path."""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import html
import json
import os
import socket
from importlib import resources

from faust.web import Request, Response, View

from streams.settings import Settings

PAGE_PATH = "/dashboard"
PLOTLY_PATH = "/dashboard/plotly.min.js"
SCRIPT_PATH = "/dashboard/dashboard.js"
JAVASCRIPT = "text/javascript; charset=utf-8"
# the script URLs carry a hash of their content, so a browser may keep them as long as it likes
CACHE_FOREVER = "public, max-age=31536000, immutable"


def static_file(name: str) -> bytes:
    return (resources.files("streams.web") / "static" / name).read_bytes()


@functools.cache
def plotly_js() -> bytes:
    """The plotly.js bundled with the installed ``plotly`` wheel."""
    return (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()


def _versioned(path: str, content: bytes) -> str:
    return f"{path}?v={hashlib.sha256(content).hexdigest()[:12]}"


def _script_view(content: bytes) -> type[View]:
    compressed: list[bytes] = []  # gzip of plotly.min.js: 4.6 MB → 1.4 MB, made on the first request

    class Script(View):
        async def get(self, request: Request) -> Response:
            # the type goes in the headers: aiohttp refuses a content_type argument with a charset
            headers = {"Content-Type": JAVASCRIPT, "Cache-Control": CACHE_FOREVER, "Vary": "Accept-Encoding"}
            if "gzip" not in request.headers.get("Accept-Encoding", ""):
                return self.bytes(content, headers=headers)
            if not compressed:
                compressed.append(await asyncio.to_thread(gzip.compress, content, 6))
            headers["Content-Encoding"] = "gzip"
            return self.bytes(compressed[0], headers=headers)

    return Script


def plotly_view() -> type[View]:
    return _script_view(plotly_js())


def script_view() -> type[View]:
    return _script_view(static_file("dashboard.js"))


def dashboard_view(settings: Settings) -> type[View]:
    """The page, with what the browser needs before its first fetch: the refresh period and this worker."""
    config = {
        "refresh_seconds": settings.dashboard_refresh_seconds,
        "app_id": settings.app_id,
        "url": f"http://{settings.web_host}:{settings.web_port}",
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "paths": {"data": f"{PAGE_PATH}/data", "drift": "/drift", "models": "/models", "health": "/health"},
    }
    page = (
        static_file("dashboard.html")
        .decode("utf-8")
        .replace("{{config}}", html.escape(json.dumps(config), quote=True))
        .replace("{{app_id}}", html.escape(settings.app_id))
        .replace("{{plotly_src}}", _versioned(PLOTLY_PATH, plotly_js()))
        .replace("{{script_src}}", _versioned(SCRIPT_PATH, static_file("dashboard.js")))
    )

    class Dashboard(View):
        async def get(self, request: Request) -> Response:
            return self.html(page, headers={"Cache-Control": "no-cache"})

    return Dashboard
