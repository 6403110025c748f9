"""Flower's side of ``cvapps federated``: runs in Flower's own virtual environment (``cvapps
federated setup``; flwr cannot join cvapps's pinned set) as

    python flower.py server|client|simulate JOB.json

with the cvapps process that started it listening on CVAPPS_FED_ADDRESS (see wire.py). Flower
does what it is for — the strategies (FedAvg, FedProx, FedAvgM), the rounds, client sampling, failures,
the gRPC transport, the Ray simulation engine, DP clipping and noise, SecAgg+ — and every client
fit, evaluation and model file is asked of cvapps. Imports flwr, NumPy and the standard library
only (not the cvapps package)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import wire  # noqa: E402  (beside this file; the cvapps package is not importable here)

from flwr.client import ClientApp, NumPyClient  # noqa: E402
from flwr.common import ndarrays_to_parameters  # noqa: E402
from flwr.server.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, FedAvgM, FedProx  # noqa: E402


class Site(NumPyClient):
    """One client: its fits are the cvapps process's (``client`` = partition in a simulation, 0
    for a real client process). The global model is scored by the server (evaluate_fn), not
    by the clients (fraction_evaluate 0)."""

    def __init__(self, address: str, key: str, client: int):
        self.address, self.key, self.client = address, key, client

    def _ask(self, op: str, parameters, config) -> tuple[dict, list]:
        return wire.ask(self.address, self.key, {"op": op, "client": self.client, "config": dict(config)}, parameters)

    def fit(self, parameters, config):
        head, arrays = self._ask("fit", parameters, config)
        return arrays, head["num_examples"], head["metrics"]


def weighted_mean(results) -> dict:
    """Clients' metrics weighted by their examples (Flower's convention)."""
    total = sum(n for n, _ in results) or 1
    keys = {k for _, m in results for k, v in m.items() if isinstance(v, (int, float))}
    return {k: sum(n * m.get(k, 0.0) for n, m in results) / total for k in keys}


def make_strategy(job: dict, address: str, key: str):
    """The job's Flower strategy; every round's aggregate goes back to cvapps (model file,
    central evaluation, metrics.jsonl)."""
    base = {"fedavg": FedAvg, "fedprox": FedProx, "fedavgm": FedAvgM}[job["strategy"]]
    expected, wait = job.get("clients", 0), job.get("wait_s", 600.0)

    def configure_fit(self, server_round, parameters, client_manager):
        if server_round == 1 and expected:  # the first round starts when the expected clients are in
            client_manager.wait_for(expected, timeout=int(wait))
        return base.configure_fit(self, server_round, parameters, client_manager)

    def aggregate_fit(self, server_round, results, failures):
        params, metrics = base.aggregate_fit(self, server_round, results, failures)
        wire.ask(address, key, {"op": "aggregated", "round": server_round, "clients": len(results),
                                "failures": len(failures), "metrics": metrics,
                                "examples": [r.num_examples for _, r in results]})
        return params, metrics

    cls = type(f"Cvapps{base.__name__}", (base,), {"configure_fit": configure_fit, "aggregate_fit": aggregate_fit})
    _, init = wire.ask(address, key, {"op": "init"})

    def fit_config(server_round: int) -> dict:
        return {"round": server_round, **job["fit_config"]}

    def evaluate_fn(server_round, arrays, config):
        head, _ = wire.ask(address, key, {"op": "global", "round": server_round}, arrays)
        return head["loss"], head["metrics"]

    kw = dict(fraction_fit=job.get("fraction_fit", 1.0), fraction_evaluate=0.0, min_fit_clients=job["min_clients"],
              min_evaluate_clients=0, min_available_clients=job["min_clients"],
              initial_parameters=ndarrays_to_parameters(init), evaluate_fn=evaluate_fn, on_fit_config_fn=fit_config,
              accept_failures=True, fit_metrics_aggregation_fn=weighted_mean)
    if base is FedProx:
        kw["proximal_mu"] = job["mu"]
    if base is FedAvgM:  # w += server_lr x v, v = momentum x v + (average - w) (Hsu et al. 2019)
        kw.update(server_learning_rate=job["server_lr"], server_momentum=job["server_momentum"])
    strategy = cls(**kw)
    if job.get("dp_noise") is not None:  # central DP: the server clips each update and noises the sum
        strategy = DifferentialPrivacyServerSideFixedClipping(strategy, job["dp_noise"], job["dp_clip"],
                                                              job["sampled_clients"])
    return strategy


def server(job: dict, address: str, key: str) -> None:
    from flwr.compat.server.app import start_server
    from flwr.server import ServerConfig

    tls = job.get("certificates")  # (CA, server certificate, server key) files: gRPC over TLS
    start_server(server_address=job["listen"], strategy=make_strategy(job, address, key),
                 config=ServerConfig(num_rounds=job["rounds"], round_timeout=job.get("round_timeout")),
                 certificates=tuple(Path(f).read_bytes() for f in tls) if tls else None)


def client(job: dict, address: str, key: str) -> None:
    from flwr.compat.client.app import start_client

    ca = job.get("root_certificate")  # the CA that signed the server's certificate: gRPC over TLS
    start_client(server_address=job["server"], client=Site(address, key, 0).to_client(), insecure=ca is None,
                 root_certificates=Path(ca).read_bytes() if ca else None, max_retries=job.get("retries"),
                 max_wait_time=job.get("wait_s"))


def simulate(job: dict, address: str, key: str) -> None:
    from flwr.common import Context
    from flwr.server import LegacyContext, ServerApp, ServerAppComponents, ServerConfig
    from flwr.simulation import run_simulation

    def client_fn(context: Context):
        return Site(address, key, int(context.node_config["partition-id"])).to_client()

    config = ServerConfig(num_rounds=job["rounds"])
    if job.get("secure_aggregation"):
        from flwr.client.mod import secaggplus_mod
        from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

        server_app = ServerApp()

        @server_app.main()
        def main(grid, context: Context) -> None:
            legacy = LegacyContext(context=context, config=config, strategy=make_strategy(job, address, key))
            n = job["sampled_clients"]
            DefaultWorkflow(fit_workflow=SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=max(2, n - 1),
                                                            clipping_range=job["secagg_range"]))(grid, legacy)

        client_app = ClientApp(client_fn=client_fn, mods=[secaggplus_mod])
    else:
        server_app = ServerApp(server_fn=lambda context: ServerAppComponents(
            strategy=make_strategy(job, address, key), config=config))
        client_app = ClientApp(client_fn=client_fn)
    cpus = job.get("cpus", os.cpu_count() or 1)
    # one client at a time: cvapps answers one request at a time, and each fit uses every core
    run_simulation(server_app=server_app, client_app=client_app, num_supernodes=job["clients"],
                   backend_config={"client_resources": {"num_cpus": cpus, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": cpus, "include_dashboard": False,
                                                 "logging_level": "error", "log_to_driver": True}})


if __name__ == "__main__":
    mode, job_file = sys.argv[1], sys.argv[2]
    {"server": server, "client": client, "simulate": simulate}[mode](
        json.loads(Path(job_file).read_text()), os.environ[wire.ENV_ADDRESS], os.environ[wire.ENV_KEY])
