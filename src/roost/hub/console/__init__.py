"""The hub's web console: server-rendered pages under ``/console`` (Jinja2, no JavaScript needed).

``install(app)`` adds the pages, the stylesheet (``/console/static``) and the handlers that turn a
missing session into a redirect to the sign-in page. People sign in with an admin API token; the
browser then holds a signed, HttpOnly, SameSite=Strict session cookie naming the token's id (see
:mod:`roost.hub.console.sessions`). The pages only read through :class:`~roost.hub.store.Store`.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from roost.hub.console import routes

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the console on ``app`` (whose ``app.state.store`` is the hub's Store)."""
    app.include_router(routes.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_exception_handler(routes.SignInRequired, routes.on_sign_in_required)
    app.add_exception_handler(routes.PageError, routes.on_page_error)


__all__ = ["install"]
