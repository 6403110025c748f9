"""``cvapps serve``: models behind HTTP (Starlette on uvicorn).

    POST /predict[?model=NAME]   an image as the raw body, or a multipart upload (first file)
                                 -> the JSON Lines record `cvapps predict --save-json` writes
    GET  /health                 -> {"status": "ok", "models": N, "pending": n}
    GET  /models                 -> [{"name", "task", "labels", "backend", "input_size",
                                      "requests", "batches" (served so far)}]

Concurrent requests for one model are gathered (up to ``max_batch`` images, waiting at
most ``batch_wait_ms`` for company) into one batched forward pass run in a worker thread.
Bounded: a body over ``max_bytes`` gets 413, an image whose header declares more than
``max_pixels`` gets 413 before it is decoded, more than ``max_pending`` requests in the
server get 503 (every error is JSON ``{"error": "..."}``); an image that does not decode
gets 400 with a one-line reason and the server keeps serving. At most one image per core is
decoded at a time, so the memory decoding takes stays bounded whatever the load. uvicorn
stops gracefully on SIGINT / SIGTERM (requests in flight finish)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .api import _model, helper_loader
from .data.io import decode_image, max_pixels
from .errors import ConfigError, DataError, ImageTooLarge
from .options import Options, opt
from .runtime import cores
from .runtimes import backends, default_precision, is_graph, pipeline_precision, prepare
from .tasks.batch import FrameResult, refined, run_batch


@dataclass
class ServeOptions(Options):
    """Limits and batching of ``cvapps serve``."""

    what: ClassVar[str] = "serve"
    host: str = "127.0.0.1"
    port: int = opt(8000, low=0, high=65535)
    max_bytes: int = opt(20_000_000, low=1)  # largest accepted request body
    max_pixels: int | None = opt(None, low=1)  # largest image (width x height); None: CVAPPS_MAX_PIXELS or 1e8
    max_pending: int = opt(64, low=1)  # requests inside the server at once; more get 503
    max_batch: int = opt(8, low=1)
    batch_wait_ms: float = opt(5.0, low=0.0)
    device: str = "cpu"
    backend: str = opt("auto", choices=backends())
    precision: str | None = None  # None: CVAPPS_PRECISION, else "auto" (as predict)


class HTTPError(Exception):
    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


class Served:
    """One model with its preprocessing, postprocessing options and request batcher."""

    def __init__(self, name: str, model, opts: ServeOptions):
        pre, post = model.spec.predict_setup(model, helper_loader(opts.device, opts.backend), [])
        if not is_graph(model):
            model = prepare(model.eval().fold_batchnorm(), opts.backend, opts.device,
                            opts.precision or default_precision(), post, pre=pre)
        self.precision = pipeline_precision(model, opts.precision or default_precision())
        self.name, self.model, self.pre, self.post, self.opts = name, model, pre, post, opts
        self.queue: asyncio.Queue | None = None
        self.requests = self.batches_run = 0

    def describe(self) -> dict:
        return {"name": self.name, "task": self.model.task, "labels": list(self.model.labels),
                "backend": self.model.backend if is_graph(self.model) else "torch",
                "precision": self.model.precision if is_graph(self.model) else self.precision,
                "input_size": self.model.config["preprocessing"]["input_size"],
                "requests": self.requests, "batches": self.batches_run}

    def prepare(self, data: bytes, source: str):
        image = decode_image(data, source, self.opts.max_pixels)
        u8, meta = self.pre.prepare(image, source, None)
        return image, u8, meta

    async def predict(self, data: bytes, source: str, decoding: asyncio.Semaphore) -> dict:
        try:
            async with decoding:
                image, u8, meta = await asyncio.to_thread(self.prepare, data, source)
        except ImageTooLarge as e:
            raise HTTPError(413, e.one_line()) from None
        except DataError as e:
            raise HTTPError(400, e.one_line()) from None
        done = asyncio.get_running_loop().create_future()
        await self.queue.put((u8, meta, image, done))
        pred = await done
        return FrameResult(source, None, pred, image).to_dict(self.model.task)

    def run(self, items: list) -> list:
        """(u8, meta, image, future) requests -> their predictions (the preprocessor's
        ``refine`` too, e.g. the face check)."""
        preds = run_batch(self.model, [i[0] for i in items], [i[1] for i in items], self.precision, self.pre,
                          **self.post)
        return refined(self.pre, preds, [i[2] for i in items])

    async def batches(self) -> None:
        """Gather queued requests into batches and run them, one batch at a time."""
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.opts.batch_wait_ms / 1000  # the first request waits at most this
            with contextlib.suppress(asyncio.TimeoutError):
                while len(items) < self.opts.max_batch:
                    items.append(await asyncio.wait_for(self.queue.get(), max(0.0, deadline - loop.time())))
            self.requests += len(items)
            self.batches_run += 1
            try:
                preds = await asyncio.to_thread(self.run, items)
                for (*_, fut), p in zip(items, preds):
                    if not fut.done():
                        fut.set_result(p)
            except Exception as e:  # noqa: BLE001 - handed to the requests, the batcher lives on
                for *_, fut in items:
                    if not fut.done():
                        fut.set_exception(e)


def model_name(source) -> str:
    """A model file's stem, a weights name as it is."""
    return Path(source).stem if Path(str(source)).is_file() else str(source)


def make_app(models: list, opts: ServeOptions | None = None):
    """A Starlette app serving ``models`` (files, weights names or TaskModels; the first is
    the default of /predict)."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    opts = opts or ServeOptions()
    if opts.max_pixels is None:
        opts.max_pixels = max_pixels()
    if not models:
        raise ConfigError("nothing to serve", hint="pass --model FILE or a weights name (repeatable)")
    served: dict[str, Served] = {}
    for src in models:
        name = model_name(src) if not hasattr(src, "task") else src.task
        if name in served:
            raise ConfigError(f"two models would both be served as {name!r}", hint="rename one of the files")
        served[name] = Served(name, _model(src, None, opts.device), opts)
    default = next(iter(served))
    state = {"pending": 0, "decoding": None}

    def error(status: int, detail: str) -> JSONResponse:
        return JSONResponse({"error": detail}, status_code=status)

    async def read_body(request: Request) -> tuple[bytes, str]:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > opts.max_bytes:
            raise HTTPError(413, f"request body of {int(declared)} bytes is over the limit of {opts.max_bytes}")
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_part_size=opts.max_bytes)
            files = [v for v in form.values() if hasattr(v, "read")]
            if not files:
                raise HTTPError(400, "the multipart form has no file field (send the image as a file)")
            return await files[0].read(), files[0].filename or "upload"
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > opts.max_bytes:
                raise HTTPError(413, f"request body is over the limit of {opts.max_bytes} bytes")
        return bytes(body), request.query_params.get("name", "upload")

    async def predict(request: Request):
        try:
            name = request.query_params.get("model", default)
            if name not in served:
                raise HTTPError(404, f"no model {name!r}; served: {', '.join(served)}")
            data, source = await read_body(request)
            if not data:
                raise HTTPError(400, "empty body: send the image bytes (or a multipart file upload)")
            return JSONResponse(await served[name].predict(data, source, state["decoding"]))
        except HTTPError as e:
            return error(e.status, e.detail)

    async def health(request: Request):
        return JSONResponse({"status": "ok", "models": len(served), "pending": state["pending"]})

    async def list_models(request: Request):
        return JSONResponse([s.describe() for s in served.values()])

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["decoding"] = asyncio.Semaphore(cores())
        tasks = []
        for s in served.values():
            s.queue = asyncio.Queue()
            tasks.append(asyncio.create_task(s.batches()))
        yield
        for t in tasks:
            t.cancel()

    app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health),
                            Route("/models", list_models)], lifespan=lifespan)
    busy = f"server busy: {opts.max_pending} requests in progress; retry later"
    return Bounded(app, opts.max_pending, state, lambda: JSONResponse({"error": busy}, status_code=503,
                                                                      headers={"Retry-After": "1"}))


class Bounded:
    """ASGI middleware: at most ``limit`` HTTP requests inside the app at once; more get a
    JSON 503 at once (the server's other errors are JSON too; uvicorn's own limit answers in
    plain text, so it is not used). ``state["pending"]``: the requests inside now."""

    def __init__(self, app, limit: int, state: dict, busy):
        self.app, self.limit, self.state, self.busy = app, limit, state, busy

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") == "/health":
            return await self.app(scope, receive, send)
        if self.state["pending"] >= self.limit:
            return await self.busy()(scope, receive, send)
        self.state["pending"] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state["pending"] -= 1


def serve(models: list, **options) -> None:
    """Serve ``models`` over HTTP until interrupted (see the module docstring; ``options``:
    ServeOptions fields)."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serving needs the [serve] extra", hint="pip install 'cvapps[serve]'") from None
    opts = ServeOptions.parse(options)
    app = make_app(models, opts)
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="info", timeout_graceful_shutdown=30)
