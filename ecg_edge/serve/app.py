"""The Ray Serve deployment: one backend per replica, requests batched into one backend call.

Every request is answered: a bad one with a 4xx and `{"error": one line}`, a fault of the server with
a 500 and the same one line (the traceback goes to the replica's log, never to the client).
"""

from __future__ import annotations

import asyncio
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve
from ray.serve.metrics import Counter, Histogram
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ecg_edge.backends import open_backend
from ecg_edge.errors import InputError
from ecg_edge.exams import ReadOptions
from ecg_edge.infer import model_sha256
from ecg_edge.input_pool import InputPool
from ecg_edge.results import InferenceRun, results_document
from ecg_edge.serve import kserve
from ecg_edge.serve.bodies import MAX_FILES, BodyError, Upload, read_uploads
from ecg_edge.serve.options import ServeOptions

log = logging.getLogger("ray.serve")

V1 = "/v1/ecg"
# What a request was batched with, for clients and load tests that want to see batching work.
BATCH_REQUESTS = "x-ecg-edge-batch-requests"
BATCH_EXAMS = "x-ecg-edge-batch-exams"
V2_MODEL = f"/v2/models/{kserve.MODEL_NAME}"
V2_INFER = (f"{V2_MODEL}/infer", f"{V2_MODEL}/versions/{kserve.MODEL_VERSION}/infer")
V2_READY = ("/v2/health/ready", "/v2/health/live", f"{V2_MODEL}/ready",
            f"{V2_MODEL}/versions/{kserve.MODEL_VERSION}/ready")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused (413) as soon as it is known to exceed `limit`: by its declared length before
    reading a byte, else while it streams in."""
    declared = kserve.byte_count(request.headers.get("content-length"))
    if declared is not None and declared > limit:
        raise BodyError(413, f"body of {declared} bytes: the limit is {limit} (ecg-edge serve --max-body-mb)")
    if request.headers.get("content-encoding", "identity").lower() != "identity":
        raise BodyError(415, f"Content-Encoding {request.headers['content-encoding']!r}: send the body uncompressed")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"body over {limit} bytes (ecg-edge serve --max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


async def uploads_of(request: Request, body: bytes) -> list[Upload]:
    """A raw body is one file (named by `?name=`); a multipart one, its files (a WFDB record)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return [Upload(request.query_params.get("name", ""), body)]

    async def replay() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=MAX_FILES, max_fields=MAX_FILES)
    except Exception as exc:  # starlette's multipart errors: the body is malformed
        raise BodyError(400, f"malformed multipart body ({getattr(exc, 'detail', None) or exc})") from None
    files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
    if not files:
        raise BodyError(400, "multipart body holds no file")
    return [Upload(f.filename or "", await f.read()) for f in files]


def read_options(request: Request) -> ReadOptions:
    query = request.query_params
    try:
        fs = float(query["fs"]) if "fs" in query else None
        scale = float(query.get("scale", "1"))
    except ValueError:
        raise BodyError(400, "fs and scale must be numbers") from None
    if not math.isfinite(scale):
        raise BodyError(400, "scale must be a finite number")
    leads = [lead.strip() for lead in query["leads"].split(",")] if "leads" in query else None
    try:
        return ReadOptions(scale=scale, fs=fs, leads=leads, measure=query.get("measure", "auto"))
    except InputError as exc:  # ReadOptions checks the measurement level
        raise BodyError(400, exc.problem) from None


@serve.deployment(name="ecg", max_queued_requests=2048,
                  graceful_shutdown_timeout_s=30, graceful_shutdown_wait_loop_s=1,
                  health_check_period_s=5, health_check_timeout_s=30)
class EcgDeployment:
    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.backend, self.manifest = open_backend(options.export_dir, options.backend, options.precision,
                                                   threads=options.threads)
        self.backend.activate()
        # requests' recordings read in worker processes, each within its time and memory budget
        self.inputs = InputPool(options.workers, ReadOptions()).__enter__() if options.workers else None
        self.classes = list(self.manifest["output"]["classes"])
        self.thresholds = {**self.manifest["thresholds"], **options.thresholds}
        self.output_name = self.manifest["output"]["name"]
        self.model_sha256 = model_sha256(self.backend, self.manifest)
        self.described = self.backend.describe()
        self._run = ThreadPoolExecutor(1, thread_name_prefix="ecg-backend")  # one backend call at a time
        batched: Any = self.batched  # serve.batch's wrapper carries its settings
        batched.set_max_batch_size(options.max_batch)
        batched.set_batch_wait_timeout_s(options.batch_wait_ms / 1000)
        self.requests = Counter("ecg_edge_requests", "Requests answered, by endpoint and status.",
                                tag_keys=("endpoint", "status"))  # type: ignore[arg-type]
        self.exams = Counter("ecg_edge_exams", "Exams inferred.")
        self.batch_requests = Histogram("ecg_edge_batch_requests", "Requests merged into one backend call.",
                                        boundaries=[1, 2, 4, 8, 16, 32, 64, 128])
        self.batch_exams = Histogram("ecg_edge_batch_exams", "Exams in one backend call.",
                                     boundaries=[1, 2, 4, 8, 16, 32, 64, 128, 256])

    def check_health(self) -> None:
        if not self.backend.active:
            raise RuntimeError("backend is not active")

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def batched(self, signals: list[np.ndarray]) -> list[tuple[np.ndarray, dict[str, str]]]:
        """Each request's probabilities, and headers saying what it was batched with."""
        x = np.concatenate(signals)
        probabilities = await asyncio.get_running_loop().run_in_executor(self._run, self.backend.infer, x)
        self.batch_requests.observe(len(signals))
        self.batch_exams.observe(len(x))
        self.exams.inc(len(x))
        bounds = np.cumsum([len(s) for s in signals])[:-1]
        batch = {BATCH_REQUESTS: str(len(signals)), BATCH_EXAMS: str(len(x))}
        return [(part, batch) for part in np.split(probabilities, bounds)]

    async def __call__(self, request: Request) -> Response:
        path, method = request.url.path.rstrip("/") or "/", request.method
        endpoint = V1 if path == V1 else "v2-infer" if path in V2_INFER else path
        try:
            response = await self._route(request, path, method)
        except BodyError as exc:
            response = error(exc.status, str(exc))
        except InputError as exc:
            response = error(400, str(exc))
        except Exception as exc:
            log.exception("ecg-edge serve: %s %s failed", method, path)
            response = error(500, f"internal error ({type(exc).__name__}): see the server's log")
        if endpoint in (V1, "v2-infer"):
            self.requests.inc(tags={"endpoint": endpoint, "status": str(response.status_code)})
        return response

    async def _route(self, request: Request, path: str, method: str) -> Response:
        if path == V1 or path in V2_INFER:
            if method != "POST":
                return error(405, f"{path} takes POST")
            body = await read_body(request, self.options.max_body_bytes)
            return await (self._recording(request, body) if path == V1 else self._tensor(request, body))
        if method != "GET":
            return error(405, f"{path} takes GET" if path in (*V2_READY, V2_MODEL, "/v2") else f"no endpoint {path}")
        if path in V2_READY:
            return JSONResponse({"ready": self.backend.active})
        if path == V2_MODEL:
            facts = {"backend": self.described, "precision": self.backend.precision, "model_sha256": self.model_sha256}
            return JSONResponse(kserve.model_metadata(self.manifest, facts))
        if path == "/v2":
            return JSONResponse({"name": "ecg-edge", "extensions": ["binary_tensor_data"]})
        return error(404, f"no endpoint {path}: POST {V1} (a recording) or {V2_INFER[0]} (tensors)")

    async def _recording(self, request: Request, body: bytes) -> Response:
        uploads = await uploads_of(request, body)
        options = read_options(request)
        exams = await asyncio.to_thread(read_uploads, uploads, options, self.inputs.read if self.inputs else None)
        probabilities, batch = await self.batched(np.stack([x for _, x in exams]))
        run = InferenceRun(classes=self.classes, thresholds=self.thresholds, exams=[e for e, _ in exams],
                           probabilities=probabilities, backend=self.described, precision=self.backend.precision,
                           model_sha256=self.model_sha256)
        return JSONResponse(results_document(run), headers=batch)

    async def _tensor(self, request: Request, body: bytes) -> Response:
        tensor = kserve.parse_infer(body, request.headers.get(kserve.HEADER_LENGTH), self.output_name)
        probabilities, batch = await self.batched(tensor.signal)
        content, headers = kserve.infer_response(tensor, probabilities, self.output_name)
        return Response(content, headers={**headers, **batch})
