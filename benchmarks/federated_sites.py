"""Federated fine-tuning of an ImageNet MobileNetV2 on hymenoptera (ants vs bees; 244 training
images, the 153 validation images stay with the server), the same epochs over the data:

  * centralised `cvapps train` vs 3 simulated sites (IID, and Dirichlet(0.5) with FedAvg and
    with FedProx), and the cost of Flower's central DP (server-side fixed clipping) and of
    SecAgg+ (time, accuracy);
  * a real deployment on 127.0.0.1: `cvapps federated server` and two `cvapps federated client`
    processes (the training images halved between them); client B is killed (its whole process
    group) in the middle of round 2 — the run must complete with site A.

    .venv/bin/python benchmarks/federated_sites.py [--epochs 6] [--parts sim,kill]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

import cvapps
import cvapps.federated as fed

from _common import data_root, require

COMMON = dict(backbone="mobilenet_v2", weights="mobilenet_v2.imagenet1k", batch_size=16)


ARMS = {"iid": dict(partition="iid"),
        "dirichlet0.5_fedavg": dict(partition="dirichlet:0.5"),
        "dirichlet0.5_fedprox": dict(partition="dirichlet:0.5", strategy="fedprox", mu=0.01),
        "iid_dp_noise0.001_clip5": dict(partition="iid", dp_noise=0.001, dp_clip=5.0),
        "iid_dp_noise0.01_clip5": dict(partition="iid", dp_noise=0.01, dp_clip=5.0),
        "iid_dp_noise0.1_clip5": dict(partition="iid", dp_noise=0.1, dp_clip=5.0),
        "iid_secagg+": dict(partition="iid", secure_aggregation=True)}


def simulated(data: Path, work: Path, epochs: int, lr: float, arms: list[str]) -> dict:
    quiet = Console(file=io.StringIO())
    report = {}
    if "central" in arms:
        t = time.perf_counter()
        cvapps.train("classify", str(data), out=str(work / "central"), epochs=epochs, lr=lr, warmup_epochs=0.0,
                     overwrite=True, console=quiet, **COMMON)
        last = json.loads((work / "central" / "metrics.jsonl").read_text().splitlines()[-1])
        report["central"] = {"top1": round(last["top1"], 4), "minutes": round((time.perf_counter() - t) / 60, 2)}
        print("central", report["central"], flush=True)
    for name, kw in ((n, k) for n, k in ARMS.items() if n in arms):
        t = time.perf_counter()
        try:
            r = fed.simulate("classify", str(data), clients=3, rounds=epochs, local_epochs=1, lr=lr,
                             out=str(work / name), overwrite=True, console=quiet, **COMMON, **kw)
            report[name] = {"top1": round(r["final"], 4), "sites": r["sites"],
                            "per_round": [round(x.get("top1", 0), 3) for x in r["records"]]}
        except Exception as e:  # noqa: BLE001 — a failing arm is reported, the others still run
            report[name] = {"error": str(e)[:300]}
        report[name]["minutes"] = round((time.perf_counter() - t) / 60, 2)
        print(name, report[name], flush=True)
    return report


def split_sites(data: Path, work: Path) -> tuple[Path, Path]:
    """The training images halved (every other file of each class) into two site folders."""
    sites = (work / "site_a", work / "site_b")
    for s in sites:
        shutil.rmtree(s, ignore_errors=True)
    for cls in sorted(p.name for p in (data / "train").iterdir() if p.is_dir()):
        for i, f in enumerate(sorted((data / "train" / cls).iterdir())):
            d = sites[i % 2] / cls
            d.mkdir(parents=True, exist_ok=True)
            (d / f.name).symlink_to(f.resolve())
    return sites


def killed(data: Path, work: Path, rounds: int, lr: float) -> dict:
    a, b = split_sites(data, work)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cli = [sys.executable, "-m", "cvapps", "federated"]
    logs = {k: open(work / f"{k}.log", "w") for k in ("server", "a", "b")}
    t = time.perf_counter()
    srv = subprocess.Popen(cli + ["server", "classify", "--val", str(data / "val"), "--rounds", str(rounds),
                                  "--clients", "2", "--min-clients", "1", "--lr", str(lr), "--backbone",
                                  "mobilenet_v2", "--weights", "mobilenet_v2.imagenet1k", "--out",
                                  str(work / "server"), "--overwrite", "--listen", f"127.0.0.1:{port}"],
                           stdout=logs["server"], stderr=subprocess.STDOUT, start_new_session=True)
    procs = {k: subprocess.Popen(cli + ["client", "classify", str(d), "--server", f"127.0.0.1:{port}", "--out",
                                        str(work / f"client_{k}"), "--batch-size", "16"],
                                 stdout=logs[k], stderr=subprocess.STDOUT, start_new_session=True)
             for k, d in (("a", a), ("b", b))}
    blog, tlog = work / "b.log", work / "client_b" / "round" / "metrics.jsonl"
    while srv.poll() is None and "round 1: trained" not in blog.read_text():
        time.sleep(0.2)
    seen = tlog.stat().st_mtime_ns
    while srv.poll() is None and tlog.stat().st_mtime_ns == seen:  # B's round-2 Trainer starts (rewrites its log)
        time.sleep(0.02)
    killed_at = round(time.perf_counter() - t, 1)
    os.killpg(procs["b"].pid, signal.SIGKILL)
    code = srv.wait(1800)
    code_a = procs["a"].wait(120)
    recs = [json.loads(x) for x in (work / "server" / "metrics.jsonl").read_text().splitlines()]
    return {"server_exit": code, "client_a_exit": code_a, "client_b_killed_at_s": killed_at,
            "rounds": [{k: r.get(k) for k in ("epoch", "clients", "failures", "top1")} for r in recs],
            "minutes": round((time.perf_counter() - t) / 60, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", default="runs/fed-sites")
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--parts", default="sim,kill")
    ap.add_argument("--arms", default=",".join(["central", *ARMS]), help="which simulated arms")
    args = ap.parse_args()
    data = require(data_root() / "hymenoptera", "hymenoptera")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    report = {"data": "hymenoptera: 244 train (split over the sites), 153 val (server)", "epochs": args.epochs,
              "model": "mobilenet_v2.imagenet1k, batch 16, AdamW lr %g" % args.lr}
    if "sim" in args.parts:
        report["simulated_3_sites"] = simulated(data, work, args.epochs, args.lr, args.arms.split(","))
    if "kill" in args.parts:
        report["server_2_clients_one_killed"] = killed(data, work, 3, args.lr)
        print("killed", report["server_2_clients_one_killed"], flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
