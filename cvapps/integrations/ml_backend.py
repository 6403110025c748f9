"""``cvapps serve --label-studio``: a cvapps model as a Label Studio ML backend.

    GET  /health    {"status": "UP", "model_class": "cvapps", "model_version"}
    POST /setup     {"project", "schema", "hostname", "access_token"} -> {"model_version"}
    POST /predict   {"tasks": [...], "label_config"} -> {"results": [{"result", "score", "model_version"}]}
    POST /webhook   {"action": "ANNOTATION_CREATED" | "ANNOTATION_UPDATED" | "START_TRAINING", "project"}
    POST /train     (older Label Studio's "Start training": as START_TRAINING)
    GET  /metrics   the model version, annotations since the last training, the training runs

Pre-annotations for every task type (``Prediction.to_labels``), written with the project's own
control names and classes (classes it lacks are left out). Task images are fetched from Label
Studio with the API key (from /setup, else $LABEL_STUDIO_API_KEY; host from /setup, else
$LABEL_STUDIO_URL); a refused or missing image is a one-line JSON error. On START_TRAINING,
or every ``train_every`` new annotations, a background thread pulls every finished annotation
of the project, trains from the model's starting weights (as self-training does: all labels,
no drift) and swaps the model in when done, under a new ``model_version``; /predict keeps
answering with the current model meanwhile, annotations that arrive during a run start
another, and a failed run leaves the model as it was (its error in /metrics). Optional basic
auth (``basic_auth`` "user:password")."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import traceback
import urllib.error
import urllib.request
from pathlib import Path

from ..api import _model, train
from ..data.labels import LabelImage
from ..data.labels.labelstudio import controls, fit_to, stored_name, task_results
from ..errors import ConfigError, DataError
from ..serving import HTTPError, ServeOptions, Served, model_name
from .labelstudio import connect, finished_tasks


class Backend:
    """The served model, its version and the training state."""

    def __init__(self, model: str, opts: ServeOptions, work: Path, train_every: int = 0,
                 train_options: dict | None = None, url: str | None = None, token: str | None = None):
        self.source, self.opts, self.work = model, opts, Path(work)
        self.base = model_name(model)
        self.version, self.runs = self.base, 0
        self.served = Served(self.base, _model(model, None, opts.device), opts)
        self.task = self.served.model.task
        self.url, self.token = url, token
        self.train_every, self.train_options = train_every, dict(train_options or {})
        self.new_annotations, self.project = 0, None
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.again = False
        self.history: list[dict] = []

    # images ----------------------------------------------------------------------------
    def fetch(self, ref: str) -> bytes:
        """A task image's bytes: Label Studio's own URLs with the API key, others as they are."""
        if ref.startswith("/"):
            if not self.url:
                raise HTTPError(400, f"image {ref}: no Label Studio address to fetch it from (set LABEL_STUDIO_URL "
                                     "or let Label Studio call /setup)")
            full = self.url.rstrip("/") + ref
        elif ref.startswith(("http://", "https://")):
            full = ref
        else:
            raise HTTPError(400, f"image {ref!r}: not a URL cvapps can fetch")
        req = urllib.request.Request(full)
        if self.token and (not self.url or full.startswith(self.url.rstrip("/"))):
            req.add_header("Authorization", f"Token {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise HTTPError(502, f"image {ref}: Label Studio refused the API key ({e.code}); set "
                                     "LABEL_STUDIO_API_KEY or check the token /setup sent") from None
            if e.code == 404 and "/data/local-files/" in ref:
                raise HTTPError(502, f"image {ref}: Label Studio does not serve it (404): local files need "
                                     "LOCAL_FILES_SERVING_ENABLED=true and a local storage for the folder") from None
            raise HTTPError(502, f"image {ref}: Label Studio answered {e.code}") from None
        except (urllib.error.URLError, OSError) as e:
            raise HTTPError(502, f"image {ref}: cannot reach {full}: {getattr(e, 'reason', e)}") from None

    # predict ---------------------------------------------------------------------------
    def predict(self, tasks: list, config: str | None) -> dict:
        if not config:
            raise HTTPError(400, "no label_config in the request")
        ctrl, key = controls(config)
        served, version = self.served, self.version  # one model for the whole request, even across a swap
        items = []
        for t in tasks:
            ref = (t.get("data") or {}).get(key)
            if not isinstance(ref, str):
                raise HTTPError(400, f"task {t.get('id')}: no data.{key} (the config's <Image value=\"${key}\">)")
            try:
                image, u8, meta = served.prepare(self.fetch(ref), ref)
            except DataError as e:
                raise HTTPError(400, f"task {t.get('id')}: {e.one_line()}") from None
            items.append((u8, meta, image, None))
        preds = served.run(items) if items else []
        results = []
        for (u8, meta, image, _), pred in zip(items, preds):
            im = LabelImage("", None, image.shape[1], image.shape[0], **pred.to_labels())
            fit_to(im, ctrl)
            names = {k: v[0] for k, v in ctrl.items()}
            to_name = next(iter(ctrl.values()))[1] if ctrl else "image"
            result = task_results(im, pred.point_names(), names=names, to_name=to_name)
            scores = [i.score for k in ("boxes", "polygons", "masks", "pointsets") for i in getattr(im, k)
                      if i.score is not None]
            results.append({"result": result, "score": float(sum(scores) / len(scores)) if scores else None,
                            "model_version": version})
        return {"results": results}

    # training --------------------------------------------------------------------------
    def annotated(self, project: int) -> tuple[Path, Path]:
        """Every finished annotation of ``project`` as a Label Studio export, and the folder
        its images were fetched into (named as the export's reader finds them)."""
        images = self.work / "images"
        tasks = finished_tasks(connect(self.url, self.token), self.url, project)
        for t in tasks:
            ref = next((v for v in t["data"].values() if isinstance(v, str)), None)
            target = images / stored_name(ref).lstrip("/") if ref is not None else None
            if target is not None and not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.fetch(ref))
        export = self.work / f"annotations_{int(time.time() * 1000)}.json"
        export.parent.mkdir(parents=True, exist_ok=True)
        export.write_text(json.dumps(tasks, default=str))
        return export, images

    def start_training(self, project) -> bool:
        with self.lock:
            if self.thread is not None and self.thread.is_alive():
                self.again = True  # annotations that came during the run start the next one
                return False
            self.project = project if project is not None else self.project
            if self.project is None:
                raise HTTPError(400, "no project to train from (the webhook names it)")
            self.new_annotations = 0
            self.thread = threading.Thread(target=self._train, daemon=True)
            self.thread.start()
            return True

    def _train(self) -> None:
        run = len(self.history) + 1
        record = {"run": run, "started": time.time(), "status": "running"}
        self.history.append(record)
        try:
            export, images = self.annotated(int(self.project))
            config = self.served.model.config
            out = self.work / f"run{run}"
            res = train(self.task, str(export), images=str(images), fmt="label-studio", weights=config.get("weights"),
                        backbone=config["backbone"], img_size=config["preprocessing"]["input_size"], out=str(out),
                        overwrite=True, **self.train_options)
            new = Served(self.base, _model(str(out / "best.safetensors"), None, self.opts.device), self.opts)
            with self.lock:
                self.runs += 1
                self.served, self.version = new, f"{self.base}-ft{self.runs}"
            record.update(status="done", model_version=self.version, annotated_images=len(json.loads(export.read_text())),
                          epochs=res.get("epochs_run"), seconds=round(time.time() - record["started"], 1))
        except Exception as e:  # noqa: BLE001 - a failed run keeps the current model and says why
            record.update(status="failed", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                          trace=traceback.format_exc(limit=3))
        finally:
            with self.lock:
                again, self.again = self.again, False
            if again:
                self.start_training(None)

    def webhook(self, body: dict) -> dict:
        action = body.get("action")
        project = (body.get("project") or {}).get("id") if isinstance(body.get("project"), dict) else body.get("project")
        if project is not None:
            self.project = project
        if action == "START_TRAINING":
            return {"status": "training started" if self.start_training(project) else "training queued"}
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED"):
            self.new_annotations += 1
            if self.train_every and self.new_annotations >= self.train_every:
                return {"status": "training started" if self.start_training(project) else "training queued"}
        return {"status": "ok"}

    def metrics(self) -> dict:
        return {"model_version": self.version, "annotations_since_training": self.new_annotations,
                "training": bool(self.thread and self.thread.is_alive()),
                "runs": [{k: v for k, v in r.items() if k != "trace"} for r in self.history]}


def serve(model: str, work: str | Path = "runs/ml_backend", train_every: int = 0, train_options: dict | None = None,
          basic_auth: str | None = None, **options) -> None:
    """Run the ML backend until interrupted (``options``: ServeOptions fields: host, port ...)."""
    import uvicorn

    opts = ServeOptions.parse(options)
    app = make_app(model, opts, work, train_every, train_options, basic_auth)
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="info", timeout_graceful_shutdown=30)


def make_app(model: str, opts: ServeOptions | None = None, work: str | Path = "runs/ml_backend", train_every: int = 0,
             train_options: dict | None = None, basic_auth: str | None = None, url: str | None = None,
             token: str | None = None):
    """The ML backend's Starlette app for ``model`` (a file or weights name)."""
    import os

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    backend = Backend(model, opts or ServeOptions(), Path(work), train_every, train_options,
                      url or os.environ.get("LABEL_STUDIO_URL"), token or os.environ.get("LABEL_STUDIO_API_KEY"))
    expected = "Basic " + base64.b64encode(basic_auth.encode()).decode() if basic_auth else None

    def guarded(fn, status: int = 200):
        async def handler(request: Request):
            if expected and request.headers.get("authorization") != expected:
                return JSONResponse({"error": "basic auth required"}, status_code=401,
                                    headers={"WWW-Authenticate": "Basic"})
            try:
                body = await request.json() if request.method == "POST" else {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                return JSONResponse({"error": "the body is not JSON"}, status_code=400)
            try:
                out = await asyncio.to_thread(fn, body if isinstance(body, dict) else {})
                return JSONResponse(out, status_code=status)
            except HTTPError as e:
                return JSONResponse({"error": e.detail}, status_code=e.status)
            except ConfigError as e:
                return JSONResponse({"error": e.one_line()}, status_code=400)
        return handler

    def setup(body: dict) -> dict:
        backend.url = body.get("hostname") or backend.url
        backend.token = body.get("access_token") or backend.token
        return {"model_version": backend.version}

    app = Starlette(routes=[
        Route("/health", guarded(lambda b: {"status": "UP", "model_class": "cvapps", "model_version": backend.version})),
        Route("/", guarded(lambda b: {"status": "UP", "model_class": "cvapps", "model_version": backend.version})),
        Route("/setup", guarded(setup), methods=["POST"]),
        Route("/predict", guarded(lambda b: backend.predict(b.get("tasks") or [], b.get("label_config"))),
              methods=["POST"]),
        Route("/webhook", guarded(backend.webhook, 201), methods=["POST"]),
        # older Label Studio: "Start training" posts the annotated tasks to /train ("project": "ID.TIMESTAMP")
        Route("/train", guarded(lambda b: backend.webhook({"action": "START_TRAINING", "project": {
            "id": int(str(b.get("project", "")).split(".")[0])} if str(b.get("project", "")).split(".")[0].isdigit()
            else None}), 201), methods=["POST"]),
        Route("/metrics", guarded(lambda b: backend.metrics())),
    ])
    app.state.backend = backend
    return app


__all__ = ["Backend", "make_app"]
