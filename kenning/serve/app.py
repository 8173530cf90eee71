"""`kenning serve`: the HTTP API and the browser page over one served index (FastAPI on uvicorn).

Routes (OpenAPI at /docs, its page served from the swagger-ui-bundle package): POST /identify,
POST /identities/{label}/images, DELETE /identities/{label}, DELETE /images/{id}, GET /identities,
GET /identities/{label}/images, PATCH /identities/{label} (rename), POST /identities/{label}/merge,
POST /identities/{label}/split, GET /history, GET /images/{id}/thumbnail, GET /health, GET /metrics,
and the page at /. Every error is JSON
`{"error": "one line"}`, never a traceback, and never names a server path.

Who may call and what a call may cost: guard.py; the API's handlers: routes.py; here the app
itself: middleware, errors as JSON, the page and the docs.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path

from kenning.errors import KenningError, first_line
from kenning.serve.catalogue import ServedIndex
from kenning.serve.guard import BodyLimit, BodyTooLarge, Guard, ServeSettings, public_message
from kenning.serve.routes import Metrics, api_router
from kenning.serve.uploads import Refused

STATIC = resources.files("kenning.serve") / "static"
log = logging.getLogger("kenning.serve")


PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_POLICY = PAGE_POLICY.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")  # Swagger UI's loader


def create_app(served: ServedIndex, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    metrics, guard = Metrics(), Guard(settings)
    app = FastAPI(
        title="Kenning",
        summary="Identify, confirm and enrol instances: which one is this?",
        docs_url=None,
        redoc_url=None,
    )
    _add_middleware(app, settings, guard, metrics)
    for error, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(error, handler)
    app.include_router(api_router(served, settings, guard, metrics))
    app.include_router(pages)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    return app


def _add_middleware(app: FastAPI, settings: ServeSettings, guard: Guard, metrics: Metrics) -> None:
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    if settings.cors_origins:
        origins = settings.cors_origins
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"])

    @app.middleware("http")
    async def guarded(request: Request, call_next: Any) -> Response:
        """Before the body is read: a request from the wrong host or another page is refused."""
        refusal = guard.host_refusal(request) or guard.origin_refusal(request)
        if refusal:
            response: Response = JSONResponse({"error": refusal}, status_code=403)
        else:
            response = await call_next(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        docs = request.url.path.startswith("/docs")
        response.headers["Content-Security-Policy"] = DOCS_POLICY if docs else PAGE_POLICY
        return response

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        """Outermost: refused requests are counted too."""
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, request.method, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response


async def _refused(_: Request, exc: Refused) -> JSONResponse:
    return JSONResponse({"error": public_message(exc.message)}, status_code=exc.status, headers=exc.headers)


async def _kenning_error(_: Request, exc: KenningError) -> JSONResponse:
    return JSONResponse({"error": public_message(first_line(exc))}, status_code=422)


async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc.__cause__, BodyTooLarge):
        return JSONResponse({"error": "the request is over the size limit"}, status_code=413)
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def _crashed(request: Request, exc: Exception) -> JSONResponse:
    # The details (a library's message, a C++ signature, a path) go to the server's log, not to the client.
    log.error("internal error in %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error (the service's log says more)"}, status_code=500)


ERROR_HANDLERS: dict[Any, Any] = {
    Refused: _refused,
    KenningError: _kenning_error,
    RequestValidationError: _invalid,
    StarletteHTTPException: _http_error,
    Exception: _crashed,
}

pages = APIRouter(include_in_schema=False)


@pages.get("/", response_class=HTMLResponse)
async def page() -> HTMLResponse:
    return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))


@pages.get("/docs", response_class=HTMLResponse)
async def docs() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Kenning API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
    )
