"""`kenning serve`: the HTTP API and the browser page over one served index (FastAPI on uvicorn).

Routes (OpenAPI at /docs): POST /identify, POST /identities/{label}/images, DELETE
/identities/{label}, DELETE /images/{id}, GET /identities, GET /images/{id}/thumbnail, GET
/health, GET /metrics, and the page at /. Writes need the token when one is set; every error is
JSON `{"error": "one line"}`, never a traceback.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from kenning.errors import KenningError, first_line
from kenning.serve.catalogue import ServedIndex
from kenning.serve.uploads import Refused, Upload, check_upload

STATIC = resources.files("kenning.serve") / "static"


@dataclass
class ServeSettings:
    token: str | None = None  # required by write endpoints when set
    max_upload_bytes: int = 20 * 1024 * 1024  # per photo
    max_files: int = 32  # photos per request
    cors_origins: list[str] = field(default_factory=list)  # none: browsers allow same-origin pages only

    @property
    def max_request_bytes(self) -> int:
        return self.max_upload_bytes * self.max_files + 64 * 1024  # the multipart framing around them


def check_exposure(host: str, token: str | None) -> None:
    """Refuse to serve writes to a network without a token."""
    if token:
        return
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise KenningError(f"refusing to listen on {host} without a token: give --token or set KENNING_TOKEN")


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, by their Content-Length or as they stream."""

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.limit:
            await _refuse(scope, receive, send, 413, f"the request is over the limit of {self.limit} bytes")
            return
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await _refuse(scope, receive, send, 413, f"the request is over the limit of {self.limit} bytes")


async def _refuse(scope: dict, receive: Any, send: Any, status: int, message: str) -> None:
    await JSONResponse({"error": message}, status_code=status)(scope, receive, send)


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


def create_app(served: ServedIndex, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    metrics = Metrics()
    app = FastAPI(title="Kenning", summary="Identify, confirm and enrol instances: which one is this?")

    @app.middleware("http")
    async def measure(request: Request, call_next: Any) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, request.method, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - started)
        return response

    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    if settings.cors_origins:
        origins = settings.cors_origins
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"], allow_headers=["*"])

    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(KenningError)
    async def kenning_error(_: Request, exc: KenningError) -> JSONResponse:
        return JSONResponse({"error": first_line(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, _BodyTooLarge):
            return JSONResponse({"error": "the request is over the size limit"}, status_code=413)
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def crashed(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {first_line(exc)}"}, status_code=500)

    def writer(request: Request) -> None:
        authorization = request.headers.get("authorization")
        if settings.token and not (
            authorization and hmac.compare_digest(authorization.encode(), f"Bearer {settings.token}".encode())
        ):
            raise Refused(401, "this write needs the service's token: Authorization: Bearer TOKEN")

    async def read_uploads(files: list[UploadFile]) -> list[Upload]:
        if not files:
            raise Refused(422, "no photo in the request (multipart field 'files')")
        if len(files) > settings.max_files:
            raise Refused(413, f"{len(files)} photos in one request, over the limit of {settings.max_files}")
        uploads = []
        for f in files:
            data = await f.read(settings.max_upload_bytes + 1)
            uploads.append(check_upload(data, f.filename, settings.max_upload_bytes))
        return uploads

    @app.post("/identify", summary="Top-5 answers per photo, the unknown decision, and the nearest gallery photos")
    async def identify(files: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
        uploads = await read_uploads(files)
        results = await run_in_threadpool(served.identify, uploads)
        return {"results": [{"name": r.name, **r.result} for r in results]}

    write = [Depends(writer)]

    @app.post(
        "/identities/{label:path}/images", summary="Enrol photos under a label (new or existing)", dependencies=write
    )
    async def enroll(label: str, files: Annotated[list[UploadFile], File()]) -> dict[str, Any]:
        uploads = await read_uploads(files)
        return await run_in_threadpool(served.enroll, label, uploads)

    @app.delete("/identities/{label:path}", summary="Forget an identity and all its images", dependencies=write)
    async def forget_identity(label: str) -> dict[str, Any]:
        return await run_in_threadpool(served.forget, label, None)

    @app.delete("/images/{image}", summary="Forget one image by its index id", dependencies=write)
    async def forget_image(image: int) -> dict[str, Any]:
        return await run_in_threadpool(served.forget, None, image)

    @app.get("/identities", summary="Labels with their image counts, paged")
    async def identities(
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        search: Annotated[str, Query(max_length=200)] = "",
    ) -> dict[str, Any]:
        return await run_in_threadpool(served.identities, offset, limit, search)

    @app.get("/images/{image}/thumbnail", summary="A JPEG thumbnail of a gallery image", response_class=Response)
    async def image_thumbnail(image: int) -> Response:
        data = await run_in_threadpool(served.thumbnail, image)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return await run_in_threadpool(served.health)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        metrics.gallery.set((await run_in_threadpool(served.health))["images"])
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
