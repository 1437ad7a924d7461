"""The console's pages: thin handlers (check the session, call the store, render a template).

Every page except sign-in needs a session (:func:`signed_in`); without one the browser is sent to
``/console/login?next=PATH``. Store errors for unknown or invalid names become HTML error pages.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.concurrency import run_in_threadpool

from roost import __version__
from roost.hub.console import charts, sessions, views
from roost.hub.console import cluster as cluster_view
from roost.hub.contract import DeviceStatus
from roost.hub.errors import AuthenticationError, HubNotFoundError, InvalidNameError
from roost.hub.store import Store

logger = logging.getLogger(__name__)

T = TypeVar("T")

HOME = "/console/devices"
LOGIN = "/console/login"
#: Longest token accepted by the sign-in form (real tokens are ~53 characters).
MAX_TOKEN = 512

SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                                "frame-ancestors 'none'; base-uri 'none'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/console", include_in_schema=False)

templates = Environment(loader=PackageLoader("roost.hub.console", "templates"), autoescape=True,
                        undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
templates.filters.update(iso=views.iso, size=views.size, short=views.short, tone=views.tone)
templates.globals.update(ago=views.ago, version=__version__, replica_since=cluster_view.replica_since)


class SignInRequired(Exception):
    """No valid session: the handler redirects to the sign-in page."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageError(Exception):
    """An error page (unknown device, invalid name, failed CSRF check)."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def store_of(request: Request) -> Store:
    value: Store = request.app.state.store
    return value


StoreDep = Annotated[Store, Depends(store_of)]


def _load_session(store: Store, cookie: str | None) -> sessions.ConsoleSession | None:
    if not cookie:
        return None
    found = sessions.read_session(store.console_session_key(), cookie)
    if found is None:
        return None
    token_id, csrf = found
    name = store.admin_token_name(token_id)
    return None if name is None else sessions.ConsoleSession(token_id, name, csrf)


async def signed_in(request: Request, store: StoreDep) -> sessions.ConsoleSession:
    session = await run_in_threadpool(_load_session, store, request.cookies.get(sessions.SESSION_COOKIE))
    if session is None:
        raise SignInRequired(request.url.path)
    return session


SessionDep = Annotated[sessions.ConsoleSession, Depends(signed_in)]


def render(request: Request, store: Store, template: str, status: int = 200,
           session: sessions.ConsoleSession | None = None, **context: Any) -> HTMLResponse:
    html = templates.get_template(template).render(
        request_path=request.url.path, session=session, now=store.clock(), **context)
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


async def call(fn: Callable[..., T], *args: Any) -> T:
    """A store call in the thread pool; unknown or invalid names become error pages."""
    try:
        return await run_in_threadpool(fn, *args)
    except HubNotFoundError as err:
        raise PageError(404, "Not found", err.message) from err
    except InvalidNameError as err:
        raise PageError(400, "Invalid name", err.message) from err


def safe_next(value: str | None) -> str:
    """Where to go after sign-in: a console path only (no open redirect)."""
    if not value or not value.startswith("/console/") or value.startswith("//") or "\\" in value:
        return HOME
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in value):
        return HOME
    return value


def _cross_origin(request: Request) -> bool:
    """A form post whose Origin names another host (SameSite=Strict is the first guard)."""
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc != request.headers.get("host", "")


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path=sessions.COOKIE_PATH, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")


def _login_page(request: Request, store: Store, key: bytes, *, status: int = 200, error: str | None = None,
                notice: str | None = None, next_path: str = HOME) -> HTMLResponse:
    nonce, cookie = sessions.new_login_nonce(key)
    response = render(request, store, "login.html", status=status, csrf=nonce, error=error, notice=notice,
                      next_path=next_path)
    _set_cookie(response, request, sessions.LOGIN_COOKIE, cookie, sessions.LOGIN_MAX_AGE)
    return response


# -- sign in / out -------------------------------------------------------------------------------


@router.get("", response_class=RedirectResponse)
@router.get("/", response_class=RedirectResponse)
async def index() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=303)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, store: StoreDep) -> Response:
    session = await run_in_threadpool(_load_session, store, request.cookies.get(sessions.SESSION_COOKIE))
    next_path = safe_next(request.query_params.get("next"))
    if session is not None:
        return RedirectResponse(next_path, status_code=303)
    key = await run_in_threadpool(store.console_session_key)
    notice = "You are signed out." if request.query_params.get("signed_out") else None
    return _login_page(request, store, key, notice=notice, next_path=next_path)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, store: StoreDep) -> Response:
    form = await request.form(max_files=0, max_fields=8)
    token, csrf, next_field = (str(form.get(k) or "") for k in ("token", "csrf", "next"))
    next_path = safe_next(next_field)
    key = await run_in_threadpool(store.console_session_key)
    if _cross_origin(request) or not sessions.check_login_nonce(key, request.cookies.get(sessions.LOGIN_COOKIE),
                                                                csrf):
        return _login_page(request, store, key, status=403, next_path=next_path,
                           error="This sign-in form has expired or came from another site. Please try again.")
    token = token.strip()
    if not token or len(token) > MAX_TOKEN:
        return _login_page(request, store, key, status=401, next_path=next_path, error="Enter an admin API token.")
    try:
        principal = await run_in_threadpool(store.authenticate, token)
    except AuthenticationError:
        logger.info("console sign-in refused: unknown or revoked token")
        return _login_page(request, store, key, status=401, next_path=next_path,
                           error="That API token was not accepted (unknown or revoked).")
    if principal.kind != "admin":
        return _login_page(request, store, key, status=403, next_path=next_path,
                           error="Device credentials cannot sign in; use an admin API token.")
    response = RedirectResponse(next_path, status_code=303)
    _set_cookie(response, request, sessions.SESSION_COOKIE, sessions.new_session(key, principal.id),
                sessions.SESSION_MAX_AGE)
    response.delete_cookie(sessions.LOGIN_COOKIE, path=sessions.COOKIE_PATH, samesite="strict")
    logger.info("console sign-in with API token %r", principal.name)
    return response


@router.post("/logout", response_class=RedirectResponse)
async def logout(request: Request, session: SessionDep) -> Response:
    form = await request.form(max_files=0, max_fields=8)
    if _cross_origin(request) or not sessions.same(session.csrf, str(form.get("csrf") or "")):
        raise PageError(403, "Sign-out refused", "The sign-out form failed its CSRF check. Reload the page and "
                        "try again.")
    response = RedirectResponse(f"{LOGIN}?signed_out=1", status_code=303)
    response.delete_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH, samesite="strict")
    return response


# -- pages -------------------------------------------------------------------------------------------


@router.get("/devices", response_class=HTMLResponse)
async def devices(request: Request, store: StoreDep, session: SessionDep) -> HTMLResponse:
    items = await call(store.list_devices)
    statuses = [str(s) for s in DeviceStatus]
    fleet = charts.status_bar(Counter(str(d.status) for d in items), statuses)
    return render(request, store, "devices.html", session=session, devices=items, fleet=fleet)


@router.get("/devices/{name}", response_class=HTMLResponse)
async def device(name: str, request: Request, store: StoreDep, session: SessionDep) -> HTMLResponse:
    info = await call(store.get_device, name)
    deployments = {d.id: d for d in await call(store.list_deployments)}
    metrics = await call(store.device_metrics, name)
    graphs = charts.device_charts(metrics.samples, end=store.clock())
    registrations = await call(store.list_registrations, name, 1)  # the last run over SSH (roost.provision)
    return render(request, store, "device.html", session=session, device=info, deployments=deployments,
                  metrics=metrics, charts=graphs, registration=registrations[0] if registrations else None)


@router.get("/components", response_class=HTMLResponse)
async def components(request: Request, store: StoreDep, session: SessionDep) -> HTMLResponse:
    items = await call(store.list_components)
    return render(request, store, "components.html", session=session, groups=views.group_components(items))


@router.get("/deployments", response_class=HTMLResponse)
async def deployments(request: Request, store: StoreDep, session: SessionDep) -> HTMLResponse:
    items = await call(store.list_deployments)
    return render(request, store, "deployments.html", session=session, deployments=items, progress=views.progress)


@router.get("/deployments/{deployment_id}", response_class=HTMLResponse)
async def deployment(deployment_id: str, request: Request, store: StoreDep, session: SessionDep) -> HTMLResponse:
    info = await call(store.get_deployment, deployment_id)
    return render(request, store, "deployment.html", session=session, deployment=info,
                  progress=views.progress(info))


def _cluster_page(store: Store) -> cluster_view.ClusterPage:
    """The cluster's records, read for one page (each list is bounded)."""
    live = store.list_sessions(active_only=True, limit=cluster_view.LIVE_SHOWN)
    recent = store.list_sessions(limit=len(live) + 4 * cluster_view.ENDED_SHOWN)
    return cluster_view.cluster_page(store.list_nodes(), store.list_service_types(), store.list_replicas(), live,
                                     recent)


@router.get("/cluster", response_class=HTMLResponse)
async def cluster(request: Request, store: StoreDep, session: SessionDep) -> HTMLResponse:
    page = await call(_cluster_page, store)
    hub_url = f"{request.url.scheme}://{request.url.netloc}"
    return render(request, store, "cluster.html", session=session, cluster=page, hub_url=hub_url)


@router.get("/learn", response_class=HTMLResponse)
async def learn_jobs(request: Request, store: StoreDep, session: SessionDep) -> HTMLResponse:
    items = await call(store.learn_jobs)
    return render(request, store, "learn_jobs.html", session=session, jobs=items)


@router.get("/learn/{job}", response_class=HTMLResponse)
async def learn_job(job: str, request: Request, store: StoreDep, session: SessionDep) -> HTMLResponse:
    if len(job) > 64:
        raise PageError(400, "Invalid name", "a learn job id has at most 64 characters")
    info = await call(store.learn_job, job)
    return render(request, store, "learn_job.html", session=session, job=info)


# -- error handlers ------------------------------------------------------------------------------


async def on_sign_in_required(request: Request, err: Exception) -> Response:
    assert isinstance(err, SignInRequired)
    target = LOGIN if err.next_path in ("", HOME) else f"{LOGIN}?{urlencode({'next': err.next_path})}"
    response = RedirectResponse(target, status_code=303)
    if request.cookies.get(sessions.SESSION_COOKIE):  # stale or revoked: drop it
        response.delete_cookie(sessions.SESSION_COOKIE, path=sessions.COOKIE_PATH, samesite="strict")
    return response


async def on_page_error(request: Request, err: Exception) -> Response:
    assert isinstance(err, PageError)
    store = store_of(request)
    session = await run_in_threadpool(_load_session, store, request.cookies.get(sessions.SESSION_COOKIE))
    return render(request, store, "error.html", status=err.status, session=session, title=err.title,
                  message=err.message)
