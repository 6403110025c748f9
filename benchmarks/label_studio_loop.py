"""The active-learning loop against a real Label Studio, end to end.

Installs ``label-studio`` (pinned) into its own virtual environment (``$CVAPPS_LS_VENV``,
default ~/.cache/cvapps/label-studio-venv; its dependencies never touch cvapps's), starts it
on 127.0.0.1 with a temporary data dir, local-files serving over the shared data, and a user
+ legacy API token made by its own CLI flags. Then:

1. **Round trips through the server**: ground truth imported as annotations and read back from
   Label Studio's API — voc-detection boxes, COCO keypoints (points, hidden flags, boxes),
   CamVid masks (brush RLE) — compared with the source (boxes / points within 1e-3 px, masks
   pixel-identical, class names kept).
2. **Rounds** on voc-detection (70-image pool, 30-image test set, 20 VOC classes): select ->
   push (predictions as pre-annotations) -> a scripted annotator submits the ground truth of
   the picked images through the API -> pull -> train (from ssd_mobilenet_v2.coco) -> AP50 on
   the test set; active (entropy) against random at the same budget.
3. **The ML backend**: `cvapps serve --label-studio` connected to the project: predictions
   arriving on new tasks, and "Start training" producing a new model_version.

    .venv/bin/python benchmarks/label_studio_loop.py [--rounds 3 --budget 10 --epochs 8]

Prints JSON (and writes runs/label_studio_loop/report.json + rounds.png)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, require  # noqa: E402

import cvapps  # noqa: E402
from cvapps.data.detection import read_detection  # noqa: E402
from cvapps.data.detection import to_labelset as det_labels  # noqa: E402
from cvapps.data.keypoints import read_keypoints  # noqa: E402
from cvapps.data.keypoints import to_labelset as kp_labels  # noqa: E402
from cvapps.data.labels import read_labels  # noqa: E402
from cvapps.data.labels.labelstudio import label_config, local_files_url, task_results  # noqa: E402
from cvapps.data.segmentation import from_labelset as seg_from, read_camvid, to_labelset as seg_labels  # noqa: E402
from cvapps.integrations import labelstudio as ls  # noqa: E402

LS_VERSION = "1.23.2"
TOKEN = "cvappsbench0123456789abcdef0123456789ab"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ls_venv() -> Path:
    venv = Path(os.environ.get("CVAPPS_LS_VENV", Path.home() / ".cache" / "cvapps" / "label-studio-venv"))
    exe = venv / "bin" / "label-studio"
    if not exe.exists():
        print(f"installing label-studio=={LS_VERSION} into {venv} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"label-studio=={LS_VERSION}"], check=True)
    return exe


def wait_http(url: str, seconds: float = 180) -> None:
    import urllib.request

    end = time.time() + seconds
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} did not come up")


def start_label_studio(root: Path, work: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(work / "ls-data"), "LOCAL_FILES_SERVING_ENABLED": "true",
           "LOCAL_FILES_DOCUMENT_ROOT": str(root), "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false"}
    proc = subprocess.Popen([str(ls_venv()), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
                             "--username", "bench@cvapps.local", "--password", "bench-pass-123", "--user-token", TOKEN,
                             "--enable-legacy-api-token"], env=env, stdout=open(work / "ls.log", "w"),
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health")
    return url, proc


def import_ground_truth(client, url: str, name: str, labels, root: Path) -> int:
    """Tasks with ``labels`` as annotations (images by local-files URL) in a new project."""
    proj = ls.project(client, url, name, label_config(labels))
    ls._local_storage(client, url, proj.id, sorted({Path(im.path).resolve().parent for im in labels.images}))
    tasks = [{"data": {"image": local_files_url(im.path, root)},
              "annotations": [{"result": task_results(im, labels.point_names)}]} for im in labels.images]
    ls.call(client.projects.import_tasks, url, proj.id, request=tasks)
    return proj.id


def export_of(client, url: str, project: int, out: Path) -> Path:
    ls.pull(url, str(project), out, TOKEN)
    return out


def round_trips(client, url: str, root: Path, work: Path) -> dict:
    report = {}
    voc = root / "voc-detection"
    det = read_detection(voc / "annotations" / "instances_coco.json", voc / "images")
    pid = import_ground_truth(client, url, "rt-boxes", det_labels(det), root)
    back = read_detection(export_of(client, url, pid, work / "rt_boxes.json"), root, "label-studio", labels=det.labels)
    by = {r.path.name: r for r in back.records}
    err = max(float(np.abs(r.boxes - by[r.path.name].boxes).max(initial=0)) for r in det.records)
    names = all([det.labels[i] for i in r.labels] == [back.labels[i] for i in by[r.path.name].labels]
                for r in det.records)
    report["boxes"] = {"images": len(det), "boxes": int(sum(len(r.boxes) for r in det.records)),
                       "max_error_px": err, "class_names_kept": names}
    kp_root = root / "keypoints" / "coco"
    kp = read_keypoints(kp_root / "test_coco.json", kp_root)
    pid = import_ground_truth(client, url, "rt-points", kp_labels(kp), root)
    kb = read_keypoints(export_of(client, url, pid, work / "rt_points.json"), root, "label-studio")
    a = {r.path.name: [i for i in r.instances if not i.iscrowd] for r in kp.records}
    b = {r.path.name: r.instances for r in kb.records}
    perr, berr, vis = 0.0, 0.0, True
    for k in a:
        for x, y in zip(a[k], b[k]):
            seen = x.keypoints[:, 2] > 0
            perr = max(perr, float(np.abs(x.keypoints[seen, :2] - y.keypoints[seen, :2]).max(initial=0)))
            berr = max(berr, float(np.abs(x.box - y.box).max()))
            vis &= bool((x.keypoints[:, 2] == y.keypoints[:, 2]).all())
    report["points"] = {"instances": sum(len(v) for v in a.values()), "max_point_error_px": perr,
                        "max_box_error_px": berr, "visibility_kept": vis, "schema": kb.schema.name}
    seg = read_camvid(root / "camvid", "val")
    seg = seg.subset(list(range(10)))
    pid = import_ground_truth(client, url, "rt-masks", seg_labels(seg), root)
    sb = seg_from(read_labels("label-studio", export_of(client, url, pid, work / "rt_masks.json"), root),
                  list(seg.labels), seg.ignore_index)
    order = {Path(p).name: i for i, p in enumerate(sb.images)}
    same = all(np.array_equal(seg.load_mask(i), sb.load_mask(order[Path(p).name])) for i, p in enumerate(seg.images))
    report["masks"] = {"images": len(seg), "pixel_identical": same}
    return report


def annotate(client, url: str, project: int, gt: dict) -> int:
    """The scripted annotator: every task without an annotation gets its image's ground truth."""
    n = 0
    for t in ls.call(client.tasks.list, url, project=project, fields="all"):
        d = t.dict()
        if d.get("annotations"):
            continue
        im = gt[Path(d["data"]["image"]).name]
        ls.call(client.annotations.create, url, d["id"], result=task_results(im, []))
        n += 1
    return n


def loop(client, url: str, root: Path, work: Path, rounds: int, budget: int, epochs: int) -> dict:
    voc = root / "voc-detection"
    det = read_detection(voc / "annotations" / "instances_coco.json", voc / "images")
    order = np.random.default_rng(0).permutation(len(det))
    test_idx, pool_idx = sorted(order[:30].tolist()), sorted(order[30:].tolist())
    test = det.subset(test_idx)
    (work / "test.json").write_text(json.dumps(test.to_coco()))
    gt = {im.name: im for im in det_labels(det).images}
    pool = [str(det.records[i].path) for i in pool_idx]
    (work / "pool.txt").write_text("\n".join(pool) + "\n")
    base = cvapps.evaluate("ssd_mobilenet_v2.coco", str(work / "test.json"), images=str(voc / "images"))
    out = {"pool": len(pool), "test": len(test), "budget_per_round": budget, "epochs": epochs,
           "round0_pretrained_AP50_on_shared_classes": round(base.get("AP50", float("nan")), 4),
           "round0_pretrained_AP_on_shared_classes": round(base.get("AP", float("nan")), 4)}
    for strategy in ("entropy", "random"):
        rows, model, name = [], "ssd_mobilenet_v2.coco", f"loop-{strategy}"
        labelled = work / f"{strategy}_labelled.txt"
        labelled.write_text("")
        for r in range(1, rounds + 1):
            t0 = time.time()
            sel_dir = work / f"{strategy}_r{r}"
            cvapps.select(model, [str(work / "pool.txt")], budget, strategy, exclude=str(labelled), out=str(sel_dir),
                          seed=r, to=("label-studio", str(sel_dir / "tasks.json")), ls_config=str(sel_dir / "config.xml"),
                          document_root=str(root), model_version=Path(str(model)).stem)
            t_sel = time.time()
            pushed = ls.push(sel_dir / "tasks.json", url, name, TOKEN, sel_dir / "config.xml", root)
            done = annotate(client, url, pushed["project"], gt)
            pulled = ls.pull(url, name, sel_dir / "pulled.json", TOKEN, root, labelled)
            t_loop = time.time()
            res = cvapps.train("detect", str(sel_dir / "pulled.json"), images=str(root), fmt="label-studio",
                               weights="ssd_mobilenet_v2.coco", classes=list(det.labels), epochs=epochs,
                               out=str(sel_dir / "train"), val_fraction=0.0, overwrite=True)
            t_train = time.time()
            model = str(sel_dir / "train" / "best.safetensors")
            m = cvapps.evaluate(model, str(work / "test.json"), images=str(voc / "images"))
            rows.append({"round": r, "labels": pulled["tasks"], "annotated_now": done, "AP50": round(m["AP50"], 4),
                         "AP": round(m["AP"], 4), "seconds": {"select_push": round(t_sel - t0, 1),
                                                              "label_pull": round(t_loop - t_sel, 1),
                                                              "train": round(t_train - t_loop, 1),
                                                              "total": round(time.time() - t0, 1)}})
            print(json.dumps({strategy: rows[-1]}), file=sys.stderr)
        out[strategy] = rows
    return out


def ml_backend(client, url: str, root: Path, work: Path) -> dict:
    """`cvapps serve --label-studio` connected to a project: predictions, then a training webhook."""
    import urllib.request

    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": TOKEN}
    proc = subprocess.Popen([sys.executable, "-m", "cvapps", "serve", "--model", "ssd_mobilenet_v2.coco",
                             "--label-studio", "--port", str(port), "--work", str(work / "ml"), "--train-epochs", "2"],
                            env=env, stdout=open(work / "ml.log", "w"), stderr=subprocess.STDOUT)
    backend = f"http://127.0.0.1:{port}"
    try:
        wait_http(backend + "/health")
        voc = root / "voc-detection"
        det = read_detection(voc / "annotations" / "instances_coco.json", voc / "images").subset(list(range(6)))
        labels = det_labels(det)
        proj = ls.project(client, url, "ml-backend", label_config(labels))
        ls._local_storage(client, url, proj.id, [voc.resolve() / "images"])
        ls.call(client.projects.import_tasks, url, proj.id,
                request=[{"data": {"image": local_files_url(im.path, root)}} for im in labels.images])
        ls.call(client.ml.create, url, url=backend, project=proj.id, title="cvapps")
        t0 = time.time()
        req = urllib.request.Request(f"{url}/api/dm/actions?id=retrieve_tasks_predictions&project={proj.id}",
                                     data=json.dumps({"selectedItems": {"all": True, "excluded": []}}).encode(),
                                     headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=300).read()
        tasks = [t.dict() for t in ls.call(client.tasks.list, url, project=proj.id, fields="all")]
        preds = [p for t in tasks for p in t.get("predictions") or []]
        out = {"tasks": len(tasks), "predictions": len(preds), "boxes": sum(len(p["result"]) for p in preds),
               "model_versions": sorted({p["model_version"] for p in preds}), "seconds": round(time.time() - t0, 1)}
        gt = {im.name: im for im in labels.images}
        for t in tasks[:4]:
            ls.call(client.annotations.create, url, t["id"], result=task_results(gt[Path(t["data"]["image"]).name], []))
        ml = next(iter(ls.call(client.ml.list, url, project=proj.id)))
        t0 = time.time()
        ls.call(client.ml.train, url, ml.id)
        for _ in range(600):
            m = json.loads(urllib.request.urlopen(backend + "/metrics", timeout=10).read())
            if m["runs"] and m["runs"][-1]["status"] != "running":
                break
            time.sleep(1)
        out["training"] = {"model_version": m["model_version"], "run": m["runs"][-1],
                           "seconds": round(time.time() - t0, 1)}
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def plot(report: dict, path: Path) -> None:
    """AP50 and AP per round, active vs random, the pretrained detector's as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    loop_ = report["loop"]
    for ax, metric in zip(axes, ("AP50", "AP")):
        for strategy in ("entropy", "random"):
            rows = loop_[strategy]
            ax.plot([r["labels"] for r in rows], [r[metric] for r in rows], marker="o",
                    label="active (entropy)" if strategy == "entropy" else "random")
        base = loop_.get(f"round0_pretrained_{metric}_on_shared_classes")
        if base is not None:
            ax.axhline(base, color="grey", linestyle="--", label="pretrained, no labels (shared classes)")
        ax.set_xlabel("images labelled through Label Studio")
        ax.set_ylabel(f"{metric}, {loop_['test']} held-out VOC photos")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--out", default="runs/label_studio_loop")
    args = ap.parse_args()
    root = require(data_root(), "shared data").resolve()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ls-loop-"))
    url, proc = start_label_studio(root, work)
    try:
        client = ls.connect(url, TOKEN)
        report = {"label_studio": LS_VERSION, "url": url}
        t = time.time()
        report["round_trips"] = round_trips(client, url, root, work)
        report["round_trips"]["seconds"] = round(time.time() - t, 1)
        report["loop"] = loop(client, url, root, work, args.rounds, args.budget, args.epochs)
        report["ml_backend"] = ml_backend(client, url, root, work)
    finally:
        proc.terminate()
        proc.wait(30)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    plot(report, out / "rounds.png")
    print(json.dumps(report))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
