"""The Flower side of bench_network: the same workload on Flower's simulation engine (``flwr[simulation]``,
Ray backend), written the way Flower's own quickstart writes it (message API: ``ServerApp`` + ``ClientApp``,
``FedAvg`` from ``flwr.serverapp.strategy``).

Every SuperNode trains a ``torch.nn`` MLP 64-32-10 on its share (the same shares as p2pfl's peers) for one
epoch (``DataLoader`` batch 16, shuffled) with a new ``torch.optim.SGD(lr=0.1, momentum=0.9)`` per round, as
a Flower client does, and evaluates the global model on the same 360 test samples. The initial weights are
p2pfl's (``workload.initial_params``), so both sides start from the same model.

Timing: the strategy notes when each round's training is configured (round starts) and when ``start``
returns. Bytes: the simulation has no wire; the figure is what the messages carry (the model arrays of every
train and evaluate instruction and every train reply), as gRPC would move them between a SuperLink and its
SuperNodes.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from . import workload as wl

RESULT_ENV = "BENCH_NETWORK_FLOWER_RESULT"
PEERS_ENV = "BENCH_NETWORK_FLOWER_PEERS"


def _net() -> Any:
    import torch

    return torch.nn.Sequential(
        torch.nn.Linear(64, wl.HIDDEN), torch.nn.ReLU(), torch.nn.Linear(wl.HIDDEN, 10)
    )


def _initial_state() -> dict[str, Any]:
    import torch

    p = wl.initial_params(wl.load_workload(1))
    return {
        "0.weight": torch.from_numpy(p["fc1.weight"].T.copy()),
        "0.bias": torch.from_numpy(p["fc1.bias"].copy()),
        "2.weight": torch.from_numpy(p["fc2.weight"].T.copy()),
        "2.bias": torch.from_numpy(p["fc2.bias"].copy()),
    }


@lru_cache(maxsize=1)
def _data(peers: int) -> wl.Workload:
    return wl.load_workload(peers)


def _client_app() -> Any:
    import torch
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.train()  # type: ignore[misc]
    def train(msg: Message, context: Context) -> Message:
        w = _data(int(context.node_config["num-partitions"]))
        share = w.shares[int(context.node_config["partition-id"])]
        model = _net()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=wl.LR, momentum=wl.MOMENTUM)
        ds = torch.utils.data.TensorDataset(torch.from_numpy(share.x), torch.from_numpy(share.y))
        loader = torch.utils.data.DataLoader(ds, batch_size=wl.BATCH, shuffle=True)
        model.train()
        total = 0.0
        for x, y in loader:
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            total += float(loss.detach())
        metrics = MetricRecord({"train_loss": total / max(len(loader), 1), "num-examples": len(share)})
        content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
        return Message(content=content, reply_to=msg)

    @app.evaluate()  # type: ignore[misc]
    def evaluate(msg: Message, context: Context) -> Message:
        w = _data(int(context.node_config["num-partitions"]))
        model = _net()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        model.eval()
        with torch.no_grad():
            out = model(torch.from_numpy(w.test.x))
            loss = float(torch.nn.functional.cross_entropy(out, torch.from_numpy(w.test.y)))
            acc = float((out.argmax(1).numpy() == w.test.y).mean())
        metrics = MetricRecord({"eval_loss": loss, "eval_acc": acc, "num-examples": len(w.test)})
        return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)

    return app


def _server_app(peers: int, rounds: int, result_path: Path) -> Any:
    from flwr.app import ArrayRecord, Context
    from flwr.serverapp import Grid, ServerApp
    from flwr.serverapp.strategy import FedAvg

    app = ServerApp()

    class TimedFedAvg(FedAvg):  # type: ignore[misc]
        """FedAvg that notes when each round starts and what the messages carry."""

        round_starts: ClassVar[list[float]] = []
        model_bytes: ClassVar[int] = 0

        def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            self.round_starts.append(time.time())
            msgs = list(super().configure_train(server_round, arrays, config, grid))
            TimedFedAvg.model_bytes += len(msgs) * arrays.count_bytes()
            return msgs

        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            replies = list(replies)
            for r in replies:
                if r.has_content():
                    TimedFedAvg.model_bytes += r.content["arrays"].count_bytes()
            return super().aggregate_train(server_round, replies)

        def configure_evaluate(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Any:
            msgs = list(super().configure_evaluate(server_round, arrays, config, grid))
            TimedFedAvg.model_bytes += len(msgs) * arrays.count_bytes()
            return msgs

    @app.main()  # type: ignore[misc]
    def main(grid: Grid, context: Context) -> None:
        strategy = TimedFedAvg(
            fraction_train=1.0,
            fraction_evaluate=1.0,
            min_train_nodes=peers,
            min_evaluate_nodes=peers,
            min_available_nodes=peers,
        )
        result = strategy.start(grid=grid, initial_arrays=ArrayRecord(_initial_state()), num_rounds=rounds)
        ended = time.time()
        evals = result.evaluate_metrics_clientapp
        last = evals[max(evals)] if evals else {}
        acc = float(last["eval_acc"]) if "eval_acc" in last else float("nan")
        starts = TimedFedAvg.round_starts
        per_round = [b - a for a, b in zip(starts, [*starts[1:], ended], strict=True)]
        result_path.write_text(
            json.dumps(
                {
                    "side": "flower",
                    "peers": peers,
                    "rounds": rounds,
                    "first_round_start_at": starts[0] if starts else None,
                    "ended_at": ended,
                    "round_s_p50": float(np.percentile(per_round, 50)) if per_round else None,
                    "round_s_p95": float(np.percentile(per_round, 95)) if per_round else None,
                    "round_s_mean": statistics.fmean(per_round) if per_round else None,
                    "acc_mean": acc,
                    "acc_min": acc,
                    "acc_by_round": {int(k): float(v["eval_acc"]) for k, v in evals.items()},
                    "bytes_payload": TimedFedAvg.model_bytes,
                    "bytes_wire": 0,
                    "bytes_overhead": 0,
                    "bytes_discovery": 0,
                }
            )
        )

    return app


def run(peers: int, rounds: int, result_path: Path) -> None:
    """Run the Flower simulation in this process; it writes its figures to ``result_path``."""
    from flwr.simulation import run_simulation

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    _data(peers)  # fail early if the data cannot be built
    run_simulation(
        server_app=_server_app(peers, rounds, result_path),
        client_app=_client_app(),
        num_supernodes=peers,
    )
