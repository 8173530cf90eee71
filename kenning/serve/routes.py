"""The API's routes (one router): identify, enrol, forget, curate (rename, merge, split, history),
list, thumbnails, health, metrics.

Each is a thin async handler: the guard's token check as a dependency, uploads read and bounded
here, the work done by the served index (catalogue.py) in a worker thread.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi import Path as UrlPath
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kenning.serve.catalogue import ServedIndex
from kenning.serve.guard import Guard, HeavyRequests, ServeSettings
from kenning.serve.uploads import Refused, Upload, check_upload

MAX_ID = 2**63 - 1  # index ids are int64
ImageId = Annotated[int, UrlPath(ge=0, le=MAX_ID, description="index id")]
LabelText = Annotated[str, Field(min_length=1, max_length=200)]


class Rename(BaseModel):
    label: LabelText  # the new name


class Merge(BaseModel):
    labels: Annotated[list[LabelText], Field(min_length=1, max_length=100)]  # the identities merged into this one
    into: Annotated[str, Field(max_length=200)] = ""  # "": this identity's label


class Split(BaseModel):
    images: Annotated[list[Annotated[int, Field(ge=0, le=MAX_ID)]], Field(min_length=1, max_length=10_000)]
    into: LabelText


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


def api_router(served: ServedIndex, settings: ServeSettings, guard: Guard, metrics: Metrics) -> APIRouter:
    router = APIRouter()
    heavy = HeavyRequests(settings.max_heavy_requests, settings.max_waiting_requests)

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

    @router.post(
        "/identify",
        summary="Top-5 answers per photo, the unknown decision, and the nearest gallery photos",
        dependencies=read,
    )
    async def identify(
        files: Annotated[list[UploadFile], File()],
        viewpoint: Annotated[str, Form(max_length=200)] = "",
        encounter: Annotated[bool, Form()] = False,
        candidates: Annotated[int, Form(ge=1, le=100)] = 5,
    ) -> dict[str, Any]:
        async with heavy:
            uploads = await read_uploads(files)
            return await run_in_threadpool(served.identify, uploads, viewpoint, encounter, candidates)

    @router.post(
        "/identities/{label:path}/images", summary="Enrol photos under a label (new or existing)", dependencies=write
    )
    async def enroll(
        label: str,
        files: Annotated[list[UploadFile], File()],
        viewpoint: Annotated[str, Form(max_length=200)] = "",
        encounter: Annotated[str, Form(max_length=200)] = "",
    ) -> dict[str, Any]:
        async with heavy:
            uploads = await read_uploads(files)
            return await run_in_threadpool(served.enroll, label, uploads, viewpoint, encounter)

    @router.delete(
        "/identities/{label:path}",
        summary="Forget an identity and all its images (and the photos kept for them)",
        dependencies=write,
    )
    async def forget_identity(label: str) -> dict[str, Any]:
        return await run_in_threadpool(served.forget, label, None)

    @router.delete("/images/{image}", summary="Forget one image by its index id", dependencies=write)
    async def forget_image(image: ImageId) -> dict[str, Any]:
        return await run_in_threadpool(served.forget, None, image)

    @router.get("/identities/{label:path}/images", summary="Every image of an identity", dependencies=read)
    async def images_of(label: str) -> dict[str, Any]:
        return await run_in_threadpool(served.images_of, label)

    @router.patch("/identities/{label:path}", summary="Rename an identity (image ids stay)", dependencies=write)
    async def rename(label: str, body: Rename) -> dict[str, Any]:
        return await run_in_threadpool(served.rename, label, body.label)

    @router.post(
        "/identities/{label:path}/merge",
        summary="Merge other identities into this one (or, with `into`, all of them into that label)",
        dependencies=write,
    )
    async def merge(label: str, body: Merge) -> dict[str, Any]:
        return await run_in_threadpool(served.merge, label, body.labels, body.into)

    @router.post(
        "/identities/{label:path}/split",
        summary="Move images (by index id) of this identity to another, new or existing",
        dependencies=write,
    )
    async def split(label: str, body: Split) -> dict[str, Any]:
        return await run_in_threadpool(served.split, label, body.images, body.into)

    @router.get("/history", summary="What was curated since the index was built", dependencies=read)
    async def history() -> dict[str, Any]:
        return await run_in_threadpool(served.history)

    @router.get("/identities", summary="Labels with their image counts, paged", dependencies=read)
    async def identities(
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        search: Annotated[str, Query(max_length=200)] = "",
    ) -> dict[str, Any]:
        return await run_in_threadpool(served.identities, offset, limit, search)

    @router.get(
        "/images/{image}/thumbnail",
        summary="A JPEG thumbnail of a gallery image",
        response_class=Response,
        dependencies=read,
    )
    async def image_thumbnail(image: ImageId) -> Response:
        data = await run_in_threadpool(served.thumbnail, image)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=60"})

    @router.get("/health")
    async def health() -> dict[str, Any]:
        return await run_in_threadpool(served.health)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response, dependencies=read)
    async def prometheus() -> Response:
        metrics.gallery.set((await run_in_threadpool(served.health))["images"])
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
