"""Any ``torch.nn.Module`` as a peer's model, through ``p2pfl.TorchLearner``.

Run: python docs/examples/torch_learner.py   (a few seconds plus torch's import; prints accuracy)

TorchLearner takes the module, a loss function, the (inputs, labels) tensors of the train and validation
splits, and optionally an optimiser factory (default: SGD, lr 0.1, momentum 0.9). The parameters that travel
are the floating-point entries of ``module.state_dict()`` (weights, biases, BatchNorm running statistics);
integer buffers such as BatchNorm's ``num_batches_tracked`` stay local. Build the module with the same seed
on every peer so they all start from the same model.
"""

from __future__ import annotations

import torch
import trio
from _digits import N_CLASSES, peer_data
from torch import nn

import p2pfl

ROUNDS = 8


def make_module() -> nn.Module:
    torch.manual_seed(0)  # the same initial model on every peer
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),  # the 64 features are an 8x8 image
        nn.Conv2d(1, 8, kernel_size=3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, N_CLASSES),
    )


def make_learner(index: int) -> p2pfl.TorchLearner:
    train, val, _ = peer_data(index, num_peers=2)
    return p2pfl.TorchLearner(
        make_module(),
        nn.functional.cross_entropy,
        (torch.from_numpy(train.x), torch.from_numpy(train.y)),
        (torch.from_numpy(val.x), torch.from_numpy(val.y)),
        optimizer=lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        batch_size=32,
        seed=index,
    )


async def main() -> None:
    torch.set_num_threads(1)  # two peers train in parallel threads of one process here
    config = p2pfl.PeerConfig(
        network_id="torch-demo", local_steps=10, max_round_wait_s=2.0, status_interval_s=0
    )
    async with p2pfl.Peer(config, make_learner(0)) as a, p2pfl.Peer(config, make_learner(1)) as b:
        print("parameters that travel:", sorted(a.params()))
        await b.connect(a.listen_addrs[0])
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(a.run, ROUNDS)
                nursery.start_soon(b.run, ROUNDS)
        _, _, test = peer_data(0, num_peers=2)
        for name, peer in (("A", a), ("B", b)):
            learner = peer.learner
            assert isinstance(learner, p2pfl.TorchLearner)
            with torch.no_grad():
                learner.module.eval()
                predicted = learner.module(torch.from_numpy(test.x)).argmax(dim=1)
            acc = float((predicted == torch.from_numpy(test.y)).float().mean())
            val_acc = peer.reports[-1].val_accuracy
            print(f"peer {name}: round={peer.round} val_acc={val_acc:.3f} test_acc={acc:.3f}")


if __name__ == "__main__":
    trio.run(main)
