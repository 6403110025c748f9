"""Federated learning (cvapps.federated): partitions, a site's round (FedProx, FedBN), and real
Flower runs — simulated sites (Flower's simulation engine) and a gRPC server with two client
processes — whose global model is checked against FedAvg computed by hand."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

import cvapps
import cvapps.federated as fed
from cvapps.data.classification import ClassificationData, image_folder
from cvapps.errors import ConfigError
from cvapps.federated.sites import Site, get_arrays, norm_tensors, set_arrays
from conftest import COLOURS, colour_image, write_image

CVAPPS = [sys.executable, "-m", "cvapps"]


def fedavg_by_hand(files_and_counts: list[tuple[Path, int]]) -> dict[str, torch.Tensor]:
    states = [(load_file(str(f)), n) for f, n in files_and_counts]
    total = sum(n for _, n in states)
    return {k: sum(s[k].double() * n for s, n in states) / total for k, v in states[0][0].items()
            if v.is_floating_point()}


def assert_fedavg(server_file: Path, clients: list[tuple[Path, int]]) -> None:
    got, want = load_file(str(server_file)), fedavg_by_hand(clients)
    assert want, "no float tensors"
    for k, v in want.items():
        torch.testing.assert_close(got[k].double(), v, rtol=0, atol=1e-6, msg=k)


def colour_sites(root: Path, per_class: dict[str, int], seed: int) -> Path:
    for c, n in per_class.items():
        for i in range(n):
            write_image(root / c / f"{c}{seed}_{i}.png", colour_image(COLOURS[c], seed=seed * 100 + i))
    return root


def fake_data(targets: list[int], labels=("a", "b", "c", "d")) -> ClassificationData:
    return ClassificationData([Path(f"{i}.png") for i in range(len(targets))], list(targets), list(labels),
                              "multiclass", "test")


def test_partitions_cover_every_image_once():
    data = fake_data([i % 4 for i in range(400)])
    iid = fed.partition(data, 5, "iid", seed=1)
    assert sorted(sum(iid, [])) == list(range(400)) and {len(p) for p in iid} == {80}
    skew = fed.partition(data, 5, "dirichlet:0.3", seed=1)
    assert sorted(sum(skew, [])) == list(range(400)) and min(len(p) for p in skew) >= 2
    assert skew == fed.partition(data, 5, "dirichlet:0.3", seed=1)  # seeded
    # Dir(0.3): a site's class mix is far from uniform (IID sites hold 25% of each class)
    shares = [np.bincount([data.targets[i] for i in p], minlength=4) / len(p) for p in skew]
    assert max(s.max() for s in shares) > 0.5
    assert max((np.bincount([data.targets[i] for i in p], minlength=4) / 80).max() for p in iid) < 0.4
    for bad in ("dirichlet:x", "dirichlet:0", "shards"):
        with pytest.raises(ConfigError, match="--partition"):
            fed.partition(data, 5, bad)
    with pytest.raises(ConfigError, match="--clients"):
        fed.partition(data, 401, "iid")


def test_round_lr_is_cosine_over_rounds():
    assert fed.round_lr(0.1, 1, 4) == pytest.approx(0.1)
    assert fed.round_lr(0.1, 3, 4) == pytest.approx(0.05)
    assert fed.round_lr(0.1, 4, 4) == pytest.approx(0.1 * 0.5 * (1 + np.cos(np.pi * 3 / 4)))


def site_round(tmp_path, tiny_model, colour_folder, name: str, **config):
    site = Site("classify", image_folder(colour_folder / "train"), tmp_path / name,
                {"batch_size": 6, "workers": 0}, Console(quiet=True))
    start = get_arrays(tiny_model)
    cfg = {"model": json.dumps(tiny_model.config), "round": 1, "rounds": 2, "local_epochs": 1, "lr": 0.05,
           "norm": "average", **config}
    out, n, metrics = site.fit(start, cfg)
    return site, start, out, n, metrics, cfg


def test_site_round_fedprox_and_fedbn(tmp_path, tiny_model, colour_folder, monkeypatch):
    _, start, plain, n, metrics, _ = site_round(tmp_path, tiny_model, colour_folder, "plain")
    assert n == 18 and metrics["train_loss"] > 0
    _, _, prox, _, _, _ = site_round(tmp_path, tiny_model, colour_folder, "prox", proximal_mu=50.0)

    def moved(arrays):
        return sum(float(((a - s) ** 2).sum()) for a, s in zip(arrays, start))
    assert 0 < moved(prox) < 0.5 * moved(plain)  # the proximal term holds the site near the round's weights
    # FedBN: after its first round a site keeps its own BatchNorm and takes every other tensor
    site, _, local_bn, _, _, cfg = site_round(tmp_path, tiny_model, colour_folder, "fedbn", norm="local")
    names = fed.sites.travelling(site.model)
    norms = norm_tensors(site.model)
    assert norms and {k for k in norms if k not in names} == {k for k in norms if k.endswith("num_batches_tracked")}
    incoming = [a + 1.0 for a in start]
    # round 2 with training switched off: what the site starts from is what it sends back
    monkeypatch.setattr(fed.sites.Trainer, "fit", lambda self: self.records.append({"epoch": 1, "train_loss": 1.0}))
    sent, _, _ = site.fit(incoming, {**cfg, "round": 2})
    for k, a, mine, got in zip(names, incoming, local_bn, sent):
        np.testing.assert_array_equal(got, mine if k in norms else a)
    monkeypatch.undo()
    with pytest.raises(ConfigError, match="do not fit"):
        set_arrays(site.model, incoming[:-1])
    # a running variance pushed below 0 (DP noise) is clipped: a negative one makes the outputs NaN
    var = next(i for i, k in enumerate(names) if k.endswith("running_var"))
    incoming[var][:] = -0.5
    set_arrays(site.model, incoming)
    assert float(site.model.state_dict()[names[var]].min()) == 0.0


def test_a_round_of_a_share_of_an_epoch_and_kept_optimizer(tmp_path, tiny_model, colour_folder, monkeypatch):
    """--local-epochs 0.25: each round trains the next quarter of a seeded pass over the site's
    18 images (no image twice before all were seen); --local-optimizer keep: AdamW's moments
    carry over (its step count goes on), reset: they start again."""
    chunks = []
    monkeypatch.setattr(fed.sites.Trainer, "fit", lambda self: (chunks.append(list(self.train_ds.index)),
                                                                self.records.append({"train_loss": 1.0})))
    site, start, _, n, _, cfg = site_round(tmp_path, tiny_model, colour_folder, "share", local_epochs=0.25)
    for r in range(2, 6):
        site.fit(start, {**cfg, "round": r})
    assert n == 18 and [len(c) for c in chunks] == [4] * 5  # round(0.25 x 18)
    first_pass = sum(chunks[:4], []) + chunks[4][:2]
    assert sorted(first_pass) == list(range(18)) and first_pass != list(range(18))  # every image once, shuffled
    monkeypatch.undo()
    # 9 images, batch 6: 2 steps a round
    kept, _, _, _, _, cfg = site_round(tmp_path, tiny_model, colour_folder, "keep", local_epochs=0.5,
                                       local_optimizer="keep")
    assert int(kept.optimizer_state[0]["step"]) == 2
    kept.fit(start, {**cfg, "round": 2})
    assert int(kept.optimizer_state[0]["step"]) == 4
    reset, _, _, _, _, _ = site_round(tmp_path, tiny_model, colour_folder, "reset", local_epochs=0.5)
    assert reset.optimizer_state is None


def test_the_server_scores_every_n_rounds(tmp_path, tiny_model, colour_folder):
    model = copy.deepcopy(tiny_model)
    coord = fed.sites.Coordinator(model, tmp_path / "srv", image_folder(colour_folder / "val"), Console(quiet=True),
                                  eval_every=2, rounds=3)
    (tmp_path / "srv").mkdir()
    for r in range(4):
        coord.global_round(r, get_arrays(model))
    assert [r["epoch"] for r in coord.records if "top1" in r] == [0, 2, 3]  # and the last round
    assert (tmp_path / "srv" / "curves.png").is_file()


def test_flower_missing_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("CVAPPS_FLOWER_PYTHON", str(tmp_path / "nope" / "python"))
    with pytest.raises(ConfigError, match="CVAPPS_FLOWER_PYTHON"):
        fed.flower_python()
    # both are said before any data is read or folder made
    with pytest.raises(ConfigError, match="CVAPPS_FLOWER_PYTHON"):
        fed.simulate("classify", str(tmp_path / "no-data"), out=str(tmp_path / "out"))
    monkeypatch.delenv("CVAPPS_FLOWER_PYTHON")
    with pytest.raises(ConfigError, match="--strategy 'fedsgd'"):
        fed.simulate("classify", str(tmp_path / "no-data"), strategy="fedsgd", out=str(tmp_path / "out"))
    for bad, said in (({"local_epochs": 1.5}, "--local-epochs 1.5"), ({"local_epochs": 0}, "--local-epochs 0"),
                      ({"local_optimizer": "sgd"}, "--local-optimizer 'sgd'"), ({"eval_every": 0}, "--eval-every"),
                      ({"server_momentum": 1.0}, "--server-momentum 1.0")):
        with pytest.raises(ConfigError, match=said):
            fed.simulate("classify", str(tmp_path / "no-data"), out=str(tmp_path / "out"), **bad)
    assert not (tmp_path / "out").exists()


def test_simulated_round_is_fedavg_and_the_model_predicts(tmp_path, colour_folder):
    """Two in-process sites on Flower's simulation engine, one round: the global model equals
    FedAvg of the two sites' models computed by hand (weighted by their images)."""
    out = tmp_path / "fed"
    r = fed.simulate("classify", str(colour_folder), clients=2, rounds=1, backbone="mobilenet_v3_small", img_size=64,
                     lr=0.05, out=str(out), batch_size=6, workers=0, console=Console(quiet=True))
    assert r["sites"] == [9, 9] and r["rounds"] == 1
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in recs] == [0, 1] and recs[1]["clients"] == 2 and recs[1]["failures"] == 0
    assert "top1" in recs[1] and (out / "curves.png").is_file()
    assert_fedavg(out / "model.safetensors", [(out / "clients" / k / "local.safetensors", 9) for k in ("0", "1")])
    model = cvapps.load(str(out / "model.safetensors"), task="classify")
    assert model.labels == sorted(COLOURS)
    pred = cvapps.predict(model, str(next((colour_folder / "val" / "red").iterdir())))
    assert pred.summaries[0][1].split("\t")[0] in COLOURS
    with pytest.raises(ConfigError, match="already holds"):
        fed.simulate("classify", str(colour_folder), clients=2, rounds=1, out=str(out), console=Console(quiet=True))


def test_fedavgm_steps_the_server_rate_towards_the_average(tmp_path, colour_folder, monkeypatch):
    """Flower's FedAvgM, one round at server rate 0.5: the global model moves half way from the
    round's start to the sites' average (the arrays as the server sends them, before cvapps
    loads them)."""
    seen = {}
    real = fed.sites.Coordinator.global_round

    def spy(self, rnd, arrays):
        seen[rnd] = [a.copy() for a in arrays]
        return real(self, rnd, arrays)
    monkeypatch.setattr(fed.sites.Coordinator, "global_round", spy)
    out = tmp_path / "fedm"
    fed.simulate("classify", str(colour_folder), clients=2, rounds=1, backbone="mobilenet_v3_small", img_size=64,
                 lr=0.05, strategy="fedavgm", server_lr=0.5, server_momentum=0.9, out=str(out), batch_size=6,
                 workers=0, console=Console(quiet=True))
    model = cvapps.load(str(out / "model.safetensors"), task="classify")
    names = fed.sites.travelling(model)
    avg = fedavg_by_hand([(out / "clients" / k / "local.safetensors", 9) for k in ("0", "1")])
    for k, start, got in zip(names, seen[0], seen[1]):
        want = 0.5 * start.astype(np.float64) + 0.5 * avg[k].numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=k)
    assert not np.allclose(seen[1][0], avg[names[0]].numpy(), atol=1e-4)  # not plain FedAvg


def start(args: list, log: Path, **kw) -> subprocess.Popen:
    return subprocess.Popen(CVAPPS + [str(a) for a in args], stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True, **kw)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate it signed for 127.0.0.1 (openssl)."""
    folder.mkdir()

    def ssl(*args):
        subprocess.run(["openssl", *map(str, args)], cwd=folder, check=True, capture_output=True)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", 2,
        "-subj", "/CN=cvapps test CA")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.pem", "-days", 2, "-extfile", "san.cnf")
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


def test_server_and_two_client_processes_one_killed(tmp_path, colour_folder):
    """A gRPC Flower server (TLS) and two client processes on 127.0.0.1; a site without one
    class takes part (its classes matched by name). Round 1 is FedAvg of both; then site B is
    killed in the middle of round 2: the round goes on with site A (a failure is counted), and
    so does round 3; the run completes."""
    ca, cert, key = certificates(tmp_path / "tls")
    a = colour_sites(tmp_path / "site_a", {"red": 4, "green": 4, "blue": 4}, 1)
    b = colour_sites(tmp_path / "site_b", {"red": 40, "green": 40}, 2)  # no blue; slower (80 images)
    port = free_port()
    srv = start(["federated", "server", "classify", "--val", colour_folder / "val", "--rounds", 3, "--clients", 2,
                 "--backbone", "mobilenet_v3_small", "--img-size", 64, "--lr", 0.05, "--out", tmp_path / "srv",
                 "--listen", f"127.0.0.1:{port}", "--certificates", f"{ca},{cert},{key}"], tmp_path / "srv.log")
    clients = {s: start(["federated", "client", "classify", d, "--server", f"127.0.0.1:{port}", "--out",
                         tmp_path / s, "--batch-size", 2, "--workers", 0, "--root-cert", ca], tmp_path / f"{s}.log")
               for s, d in (("a", a), ("b", b))}
    try:
        deadline = time.time() + 300
        metrics = tmp_path / "srv" / "metrics.jsonl"
        while time.time() < deadline and srv.poll() is None:  # round 1 aggregated: both local models are on disk
            if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        round1 = tmp_path / "round1.safetensors"
        round1.write_bytes((tmp_path / "srv" / "model.safetensors").read_bytes())
        local = {s: tmp_path / f"{s}-round1.safetensors" for s in "ab"}
        for s in "ab":
            local[s].write_bytes((tmp_path / s / "local.safetensors").read_bytes())
        # round 2: kill site B (its cvapps process and its Flower process) once it trains (its Trainer
        # rewrites its log when it starts)
        log_b = tmp_path / "b" / "round" / "metrics.jsonl"
        seen = log_b.stat().st_mtime_ns
        while time.time() < deadline and srv.poll() is None and log_b.stat().st_mtime_ns == seen:
            time.sleep(0.02)
        os.killpg(clients["b"].pid, signal.SIGKILL)
        assert srv.wait(300) == 0, (tmp_path / "srv.log").read_text()[-3000:]
        assert clients["a"].wait(60) == 0, (tmp_path / "a.log").read_text()[-3000:]
    finally:
        for p in (srv, *clients.values()):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    assert "round 2: trained" not in (tmp_path / "b.log").read_text()  # B was killed during round 2
    assert "SSL is enabled" in (tmp_path / "srv.log").read_text()
    recs = [json.loads(x) for x in metrics.read_text().splitlines()]
    assert [(r["epoch"], r.get("clients"), r.get("failures")) for r in recs] == [(0, None, None), (1, 2, 0),
                                                                                (2, 1, 1), (3, 1, 0)]
    assert_fedavg(round1, [(local["a"], 12), (local["b"], 80)])
    model = cvapps.load(str(tmp_path / "srv" / "model.safetensors"))
    assert model.labels == sorted(COLOURS)
    assert cvapps.evaluate(model, str(colour_folder / "val"), task="classify")["count"] == 9


def test_a_site_with_unknown_classes_fails_in_one_line(tmp_path, tiny_model):
    site_dir = colour_sites(tmp_path / "site", {"red": 2}, 3)
    write_image(site_dir / "purple" / "p.png", colour_image((150, 0, 150)))
    site = Site("classify", image_folder(site_dir), tmp_path / "out", {"workers": 0}, Console(quiet=True))
    cfg = {"model": json.dumps(tiny_model.config), "round": 1, "rounds": 1, "local_epochs": 1, "lr": 0.01}
    with pytest.raises(ConfigError, match=r"classes \['purple'\] are not the federated model's"):
        site.fit(get_arrays(tiny_model), cfg)
    other = Site("detect", image_folder(site_dir), tmp_path / "out2", {}, Console(quiet=True))
    with pytest.raises(ConfigError, match="the server trains a classify model"):
        other.fit(get_arrays(tiny_model), cfg)
