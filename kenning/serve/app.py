"""`kenning serve`: the HTTP API and the browser page over one served index (FastAPI on uvicorn).

Routes (OpenAPI at /docs, its page served from the swagger-ui-bundle package): POST /identify,
POST /identities/{label}/images, DELETE /identities/{label}, DELETE /images/{id}, GET /identities,
GET /images/{id}/thumbnail, GET /health, GET /metrics, and the page at /. Every error is JSON
`{"error": "one line"}`, never a traceback, and never names a server path.

Who may call and what a call may cost: guard.py.
"""

from __future__ import annotations

import logging
import time
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi import Path as UrlPath
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from swagger_ui_bundle import swagger_ui_path

from kenning.errors import KenningError, first_line
from kenning.serve.catalogue import ServedIndex
from kenning.serve.guard import BodyLimit, BodyTooLarge, Guard, HeavyRequests, ServeSettings, public_message
from kenning.serve.uploads import Refused, Upload, check_upload

STATIC = resources.files("kenning.serve") / "static"
MAX_ID = 2**63 - 1  # index ids are int64
ImageId = Annotated[int, UrlPath(ge=0, le=MAX_ID, description="index id")]
log = logging.getLogger("kenning.serve")


class Metrics:
    """Prometheus series of one app (its own registry: several apps in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "kenning_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "kenning_request_seconds", "Request latency by route", ["route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.gallery = Gauge("kenning_gallery_images", "Images the served index answers from", registry=self.registry)


PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
DOCS_POLICY = PAGE_POLICY.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")  # Swagger UI's loader


def create_app(served: ServedIndex, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    metrics = Metrics()
    guard = Guard(settings)
    heavy = HeavyRequests(settings.max_heavy_requests, settings.max_waiting_requests)
    app = FastAPI(
        title="Kenning",
        summary="Identify, confirm and enrol instances: which one is this?",
        docs_url=None,
        redoc_url=None,
    )

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

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"error": public_message(exc.message)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(KenningError)
    async def kenning_error(_: Request, exc: KenningError) -> JSONResponse:
        return JSONResponse({"error": public_message(first_line(exc))}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, BodyTooLarge):
            return JSONResponse({"error": "the request is over the size limit"}, status_code=413)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        # The details (a library's message, a C++ signature, a path) go to the server's log, not to the client.
        log.error("internal error in %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"error": "internal error (the service's log says more)"}, status_code=500)

    def reader(request: Request) -> None:
        refusal = guard.token_refusal(request, write=False)
        if refusal:
            raise Refused(401, refusal)

    def writer(request: Request) -> None:
        refusal = guard.token_refusal(request, write=True)
        if refusal:
            raise Refused(401, refusal)

    async def read_uploads(files: list[UploadFile]) -> list[Upload]:
        if not files:
            raise Refused(422, "no photo in the request (multipart field 'files')")
        if len(files) > settings.max_files:
            raise Refused(413, f"{len(files)} photos in one request, over the limit of {settings.max_files}")
        uploads, pixels = [], 0
        for f in files:
            data = await f.read(settings.max_upload_bytes + 1)
            upload = check_upload(data, f.filename, settings.max_upload_bytes)
            pixels += upload.width * upload.height
            if pixels > settings.max_request_pixels:  # before the next photo is decoded
                raise Refused(
                    413,
                    f"the photos of this request hold over {settings.max_request_pixels} pixels together: "
                    "send fewer or smaller photos per request",
                )
            uploads.append(upload)
        return uploads

    read = [Depends(reader)]
    write = [Depends(writer)]

    @app.post(
        "/identify",
        summary="Top-5 answers per photo, the unknown decision, and the nearest gallery photos",
        dependencies=read,
    )
    async def identify(files: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
        async with heavy:
            uploads = await read_uploads(files)
            results = await run_in_threadpool(served.identify, uploads)
        return {"results": [{"name": r.name, **r.result} for r in results]}

    @app.post(
        "/identities/{label:path}/images", summary="Enrol photos under a label (new or existing)", dependencies=write
    )
    async def enroll(label: str, files: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
        async with heavy:
            uploads = await read_uploads(files)
            return await run_in_threadpool(served.enroll, label, uploads)

    @app.delete(
        "/identities/{label:path}",
        summary="Forget an identity and all its images (and the photos kept for them)",
        dependencies=write,
    )
    async def forget_identity(label: str) -> dict[str, Any]:
        return await run_in_threadpool(served.forget, label, None)

    @app.delete("/images/{image}", summary="Forget one image by its index id", dependencies=write)
    async def forget_image(image: ImageId) -> dict[str, Any]:
        return await run_in_threadpool(served.forget, None, image)

    @app.get("/identities", summary="Labels with their image counts, paged", dependencies=read)
    async def identities(
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        search: Annotated[str, Query(max_length=200)] = "",
    ) -> dict[str, Any]:
        return await run_in_threadpool(served.identities, offset, limit, search)

    @app.get(
        "/images/{image}/thumbnail",
        summary="A JPEG thumbnail of a gallery image",
        response_class=Response,
        dependencies=read,
    )
    async def image_thumbnail(image: ImageId) -> Response:
        data = await run_in_threadpool(served.thumbnail, image)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return await run_in_threadpool(served.health)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response, dependencies=read)
    async def prometheus() -> Response:
        metrics.gallery.set((await run_in_threadpool(served.health))["images"])
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Kenning API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")
    return app
