"""A peer inside plain threaded code: ``p2pfl.PeerHandle`` runs it in a trio thread of its own.

Run: python docs/examples/threaded_handle.py   (a few seconds; prints progress and test accuracy)

Every PeerHandle method is thread-safe and quick (it hops onto the peer's trio loop and back), so a web
handler, a GUI callback or a training script can call ``status()``/``params()`` whenever it likes.
"""

from __future__ import annotations

import time

import numpy as np
from _digits import N_CLASSES, peer_data

import p2pfl

ROUNDS = 10


def start_peer(index: int) -> p2pfl.PeerHandle:
    train, val, _ = peer_data(index, num_peers=2)
    learner = p2pfl.NumpySoftmaxLearner(train, val, N_CLASSES, hidden=32, seed=index)
    config = p2pfl.PeerConfig(network_id="digits-demo", max_round_wait_s=2.0, status_interval_s=0)
    # Returns once the peer is online (or raises why it could not start). The peer then waits, up to
    # config.start_timeout_s, for min_neighbours (default 1) connections before its first round, runs
    # ROUNDS rounds, and keeps serving its neighbours until stop().
    return p2pfl.PeerHandle.start(config, learner, p2pfl.Identity.generate(), rounds=ROUNDS, timeout=60)


def main() -> None:
    a = start_peer(0)
    b = start_peer(1)
    try:
        print("peer A", a.peer_id, "listens on", a.listen_addrs[0])
        print("peer B connected to", b.connect(a.listen_addrs[0]))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sa, sb = a.status(), b.status()  # plain dicts, safe to json.dumps
            print(f"  A round={sa['round']} neighbours={sa['neighbours']} | B round={sb['round']}")
            if min(sa["round"], sb["round"]) >= ROUNDS:
                break
            time.sleep(0.2)
        else:
            raise SystemExit("the peers did not finish their rounds in time")

        _, _, test = peer_data(0, num_peers=2)
        params = a.params()  # a copy of A's current model: {name: float32 array}
        hidden = np.maximum(test.x @ params["fc1.weight"] + params["fc1.bias"], 0)
        predicted = (hidden @ params["fc2.weight"] + params["fc2.bias"]).argmax(axis=1)
        print(f"peer A: val_acc={a.status()['val_accuracy']:.3f} test_acc={(predicted == test.y).mean():.3f}")
    finally:
        b.stop(timeout=30)  # returns after the current round and a clean shutdown
        a.stop(timeout=30)
    print("stopped")


if __name__ == "__main__":
    main()
