"""--engine ray: images/s with 1 and 2 actors against the local run (same process, same
model and images), the cores the machine was busy on, and a two-node cluster simulated on
127.0.0.1 (Ray's cluster_utils: a head and a worker node of one CPU each) whose worker node
is killed mid-run — is the output complete, without duplicates, equal to the undisturbed
run's, and how much time did the failure cost.

The work: the default COCO detector over the shared VOC photos (listed --repeat times, each
listing a different name through a symbolic link, so every record is its own).

    CVAPPS_HOME=... .venv/bin/python benchmarks/ray_scale.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import data_root, require  # noqa: E402

import ray  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

import cvapps  # noqa: E402
from cvapps import scaleout  # noqa: E402

MODEL, TASK = "ssd_mobilenet_v2.coco", "detect"


def busy_seconds() -> float:
    """CPU-seconds the whole machine spent busy (all processes: the driver, Ray, its workers)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def timed(fn) -> tuple[float, float, object]:
    b, t = busy_seconds(), time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    return dt, (busy_seconds() - b) / dt, out


def records(path: Path) -> list[str]:
    return path.read_text().splitlines()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    photos = sorted(require(data_root() / "voc-detection" / "images", "voc-detection").glob("*.jpg"))
    report: dict = {"model": MODEL, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for r in range(args.repeat):
            (tmp / f"set{r}").mkdir()
            for p in photos:
                (tmp / f"set{r}" / p.name).symlink_to(p)
        sources = [str(tmp / f"set{r}") for r in range(args.repeat)]
        n = len(photos) * args.repeat
        report["images"] = n
        cvapps.predict(MODEL, [str(photos[0])], task=TASK, progress=False)  # warm: the runtime's graph, cached
        dt, cores, _ = timed(lambda: cvapps.predict(MODEL, sources, task=TASK, save_json=tmp / "local.jsonl",
                                                    progress=False))
        report["local"] = {"images_per_s": round(n / dt, 1), "seconds": round(dt, 1), "cores_busy": round(cores, 2)}
        print("local", report["local"], flush=True)
        base = records(tmp / "local.jsonl")

        # one machine: a local Ray with this machine's CPUs; 1 actor x 2 CPUs, then 2 actors x 1 CPU
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        for actors in (1, 2):
            out = tmp / f"ray{actors}.jsonl"
            dt, cores, _ = timed(lambda: scaleout.predict(MODEL, sources, task=TASK, actors=actors,
                                                          save_json=out, progress=False))
            same = records(out) == base
            report[f"ray_{actors}_actor"] = {"images_per_s": round(n / dt, 1), "seconds": round(dt, 1),
                                             "cores_busy": round(cores, 2), "records_equal_local": same,
                                             "vs_local": round(report["local"]["seconds"] / dt, 2)}
            print(f"ray {actors} actor(s)", report[f"ray_{actors}_actor"], flush=True)
        ray.shutdown()

        # two nodes on 127.0.0.1, one CPU each; undisturbed, then the worker node killed mid-run
        for kill in (False, True):
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
            worker = cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            out = tmp / f"two_nodes_{'killed' if kill else 'ok'}.jsonl"
            killed_at = {}

            def killer():
                partial = Path(f"{out}.partial")
                while not (partial.exists() and len(partial.read_text().splitlines()) >= n // 3):
                    time.sleep(0.2)
                killed_at["records"] = len(partial.read_text().splitlines())
                cluster.remove_node(worker, allow_graceful=False)

            th = threading.Thread(target=killer, daemon=True) if kill else None
            if th:
                th.start()
            dt, cores, _ = timed(lambda: scaleout.predict(MODEL, sources, task=TASK, actors=2, cpus_per_actor=1,
                                                          address=cluster.address, save_json=out, progress=False))
            got = records(out)
            row = {"seconds": round(dt, 1), "records": len(got),
                   "distinct_sources": len({json.loads(x)["source"] for x in got}),
                   "records_equal_local": got == base}
            if kill:
                row["killed_after_records"] = killed_at.get("records")
                row["time_lost_s"] = round(dt - report["two_nodes"]["seconds"], 1)
            report["two_nodes_worker_killed" if kill else "two_nodes"] = row
            print("two nodes" + (", worker killed" if kill else ""), row, flush=True)
            ray.shutdown()
            cluster.shutdown()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
