"""Push selected images to a running Label Studio and pull the finished labels back, through
``label-studio-sdk`` (the ``[label-studio]`` extra). The API token comes from ``--token`` or
$LABEL_STUDIO_API_KEY and is never written to a file.

Images reach Label Studio one of two ways: served from disk by its local-files storage
(start it with LOCAL_FILES_SERVING_ENABLED=true and LOCAL_FILES_DOCUMENT_ROOT=ROOT; tasks name
``/data/local-files/?d=<path under ROOT>``; push connects a local storage for the images'
folder so Label Studio may serve them) — or uploaded (``upload``), when Label Studio runs
elsewhere; the predictions are then attached to the tasks the uploads made."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlparse

from ..data.io import atomic_write, load_json
from ..data.labels.labelstudio import local_files_url, stored_name
from ..errors import ConfigError, DataError

TOKEN_ENV = "LABEL_STUDIO_API_KEY"


def connect(url: str, token: str | None = None):
    """A label-studio-sdk client; one line when the extra, the token or the server is missing
    or the token is refused."""
    try:
        from label_studio_sdk import LabelStudio
    except ImportError:
        raise ConfigError("talking to Label Studio needs label-studio-sdk",
                          hint="pip install 'cvapps[label-studio]'") from None
    token = token or os.environ.get(TOKEN_ENV)
    if not token:
        raise ConfigError("no Label Studio API token", hint=f"set {TOKEN_ENV} (Account & Settings -> Access Token)")
    client = LabelStudio(base_url=url.rstrip("/"), api_key=token, timeout=60)
    call(client.projects.list, url, page_size=1)  # fail here, in one line, not mid-push
    return client


def call(fn, server: str, *args, **kwargs):
    """``fn(*args, **kwargs)`` with Label Studio's (at ``server``) refusals and network errors as one line."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        return fn(*args, **kwargs)
    except httpx.HTTPError as e:
        raise ConfigError(f"cannot reach Label Studio at {server}: {e}", hint="is it running? check --url") from None
    except ApiError as e:
        detail = e.body.get("detail") if isinstance(e.body, dict) else str(e.body)[:300]
        if e.status_code in (401, 403):
            raise ConfigError(f"Label Studio at {server} refused the token ({e.status_code}): {detail}",
                              hint=f"check {TOKEN_ENV}; Label Studio >= 1.20 needs legacy tokens enabled for "
                                   "`Token` auth, or a personal access token") from None
        raise ConfigError(f"Label Studio at {server} answered {e.status_code}: {detail}") from None


def project(client, url: str, name: str, config: str | None = None, create: bool = True):
    """The project titled (or numbered) ``name``; created with labelling ``config`` if absent."""
    if str(name).isdigit():
        return call(client.projects.get, url, int(name))
    for p in call(client.projects.list, url, title=name):
        if p.title == name:
            return p
    if not create:
        raise ConfigError(f"no Label Studio project {name!r} at {url}", hint="check --project (a title or an id)")
    if not config:
        raise ConfigError(f"no Label Studio project {name!r}, and no --config to create it with",
                          hint="select --to label-studio ... --ls-config CONFIG.xml writes one")
    return call(client.projects.create, url, title=name, label_config=config)


def _local_path(ref: str, document_root: Path | None) -> Path | None:
    """The file a task's image reference names on this machine (local-files under the
    document root, or a plain path); None for uploads and URLs."""
    if "/data/local-files/" in ref:
        return document_root / stored_name(ref) if document_root is not None else None
    return Path(ref) if not urlparse(ref).scheme and not ref.startswith("/data/") else None


def finished_tasks(client, url: str, project: int) -> list[dict]:
    """The project's tasks with their finished annotations (cancelled ones left out), as an export lists them."""
    tasks = []
    for t in call(client.tasks.list, url, project=project, fields="all", only_annotated=True):
        d = t.dict() if hasattr(t, "dict") else dict(t)
        done = [a for a in d.get("annotations") or [] if not a.get("was_cancelled")]
        if done:
            tasks.append({"id": d["id"], "data": d["data"], "annotations": done})
    return tasks


def push(tasks_file: str | Path, url: str, name: str, token: str | None = None, config: str | Path | None = None,
         document_root: str | Path | None = None, upload: bool = False) -> dict:
    """Send the tasks of ``tasks_file`` (``select --to label-studio`` wrote them, predictions
    included) to project ``name`` at ``url``. Returns {"project", "tasks", "how"}."""
    tasks = load_json(tasks_file, "Label Studio tasks file")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in tasks):
        raise DataError("a tasks file is a JSON list of tasks with a 'data' object", path=str(tasks_file))
    root = Path(document_root).resolve() if document_root else None
    files = []
    for t in tasks:
        t.pop("id", None)
        path = _local_path(str(t["data"].get("image", "")), root)
        if (upload or root is not None) and (path is None or not path.is_file()):
            raise DataError(f"task image {t['data'].get('image')!r} is not a file here", path=str(tasks_file),
                            hint="pass --document-root (Label Studio's LOCAL_FILES_DOCUMENT_ROOT) for local-files URLs")
        files.append(path)
    client = connect(url, token)
    text = Path(config).read_text() if config else None
    proj = project(client, url, name, text)
    if upload:
        ids = _upload(client, url, proj.id, files)
        for task_id, t in zip(ids, tasks):
            for pred in t.get("predictions") or []:
                call(client.predictions.create, url, task=task_id, result=pred["result"], score=pred.get("score"),
                     model_version=pred.get("model_version"))
        return {"project": proj.id, "tasks": len(ids), "how": "uploaded"}
    if root is not None:
        for t, path in zip(tasks, files):
            t["data"]["image"] = local_files_url(path, root)
        _local_storage(client, url, proj.id, sorted({p.parent for p in files}))
    made = call(client.projects.import_tasks, url, proj.id, request=tasks, return_task_ids=True)
    return {"project": proj.id, "tasks": len(getattr(made, "task_ids", None) or tasks),
            "how": "local-files" if root is not None else "as named"}


def _local_storage(client, url: str, project_id: int, folders: list[Path]) -> None:
    """A local-files storage per folder (Label Studio serves /data/local-files/ only under one)."""
    have = {s.path for s in call(client.import_storage.local.list, url, project=project_id)}
    for folder in folders:
        if str(folder) not in have:
            call(client.import_storage.local.create, url, project=project_id, path=str(folder), use_blob_urls=True,
                 title=f"cvapps {folder.name}")


def _upload(client, url: str, project_id: int, files: list[Path]) -> list[int]:
    """Upload ``files`` as new tasks (one per image, in order); their task ids."""
    import httpx

    wrapper = client._client_wrapper  # the SDK's authenticated httpx client (its import call takes JSON only)
    ids = []
    for f in files:
        try:
            r = wrapper.httpx_client.httpx_client.post(f"{url.rstrip('/')}/api/projects/{project_id}/import",
                                                       params={"return_task_ids": "true"},
                                                       headers=wrapper.get_headers(),
                                                       files={"file": (f.name, f.read_bytes())})
        except httpx.HTTPError as e:
            raise ConfigError(f"cannot reach Label Studio at {url}: {e}") from None
        if r.status_code >= 400:
            raise ConfigError(f"Label Studio refused the upload of {f} ({r.status_code}): {r.text[:200]}")
        ids += r.json().get("task_ids") or []
    return ids


def pull(url: str, name: str, out: str | Path, token: str | None = None, document_root: str | Path | None = None,
         exclude_list: str | Path | None = None) -> dict:
    """The project's finished annotations -> ``out`` (a Label Studio JSON export: `train
    --format label-studio --data OUT --images ROOT` reads it); ``exclude_list``: the labelled
    images' local paths, one per line (``select --exclude`` leaves them out of the next pool)."""
    client = connect(url, token)
    proj = project(client, url, name, create=False)
    tasks = finished_tasks(client, url, proj.id)
    body = json.dumps(tasks, default=str)
    atomic_write(Path(out), lambda tmp: Path(tmp).write_text(body))
    report = {"project": proj.id, "tasks": len(tasks), "file": str(out)}
    if exclude_list:
        root = Path(document_root).resolve() if document_root else None
        paths = [str(p) for t in tasks if (p := _local_path(str(t["data"].get("image", "")), root)) is not None]
        atomic_write(Path(exclude_list), lambda tmp: Path(tmp).write_text("".join(p + "\n" for p in paths)))
        report["labelled_list"] = str(exclude_list)
    return report
