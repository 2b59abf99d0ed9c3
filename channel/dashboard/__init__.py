"""The live dashboard: one static page (vanilla JS, SVG, no build step) and its configuration.

The channel serves it (it is the control point of the link): ``GET /dashboard/`` is the page,
``GET /dashboard/config.json`` tells the page where the other processes' REST APIs are as a
browser reaches them (``--rx-api`` / ``--tx-api``, HOPLINK_RX_API / HOPLINK_TX_API). The page then

- subscribes to ``/stats/stream`` (SSE) of the Rx, the channel and the Tx (CORS GET, see
  :func:`shared.service.create_app`);
- polls the Rx's ``GET /thumbnails/latest`` a few times a second for the original and
  reconstructed frames (out of band: never link bits);
- builds the impairment controls from the channel's ``GET /impairments/schemas`` (so a new
  impairment module appears without touching the page) and drives ``POST/PATCH/DELETE
  /impairments/...`` (:mod:`channel.control`) and ``POST /events/corrupt`` on its own origin.

This module imports only the web stack: the channel must not pull in torch.
"""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, HTTPException
from fastapi.responses import RedirectResponse, Response

ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
PATH = "/dashboard/"


def asset(name: str) -> bytes:
    """The bytes of one of the page's files (package data, so it works from a wheel too)."""
    if name not in ASSETS:
        raise KeyError(name)
    return resources.files(__package__).joinpath(name).read_bytes()


def http_base(ws_url: str, port: int) -> str:
    """The REST base of the process whose link is ``ws_url``, on its REST ``port``:
    ``ws://host:9003/link`` -> ``http://host:8003`` (``wss`` -> ``https``)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return urlunsplit((scheme, f"{host}:{port}", "", "", ""))


def dashboard_router(config: dict[str, Any]) -> APIRouter:
    """Routes of the page: ``/dashboard/`` and its files, ``/dashboard/config.json``, and ``/``
    redirecting to the page. ``config`` is served as is (see :func:`page_config`)."""
    router = APIRouter(tags=["dashboard"])

    @router.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse(PATH)

    @router.get("/dashboard", include_in_schema=False)
    async def no_slash() -> RedirectResponse:
        return RedirectResponse(PATH)

    @router.get("/dashboard/config.json")
    async def dashboard_config() -> dict[str, Any]:
        """Where the page finds the Rx's and the Tx's REST APIs (null: not shown)."""
        return config

    @router.get(PATH, include_in_schema=False)
    async def index() -> Response:
        return _file("index.html")

    @router.get(PATH + "{name}", include_in_schema=False)
    async def file(name: str) -> Response:
        return _file(name)

    return router


def page_config(
    rx_api: str | None, tx_api: str | None, directions: tuple[str, ...], corrupt: dict[str, float]
) -> dict[str, Any]:
    """The page's configuration: other processes' base URLs, the directions of the channel,
    and the ranges of the one-shot corruption event (``{"rho": max, "sigma": max}``)."""
    return {
        "rx_api": rx_api.rstrip("/") if rx_api else None,
        "tx_api": tx_api.rstrip("/") if tx_api else None,
        "channel_api": "",  # the page's own origin
        "directions": list(directions),
        "corrupt": corrupt,
    }


def _file(name: str) -> Response:
    try:
        body = asset(name)
    except (KeyError, FileNotFoundError):
        raise HTTPException(404, f"no dashboard file {name!r}") from None
    return Response(body, media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})


__all__ = ["ASSETS", "PATH", "asset", "dashboard_router", "http_base", "page_config"]
