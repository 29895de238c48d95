"""What the libp2p engine's fork server does once so that no forked worker pays it (imported only there,
as the last of :data:`p2pfl.sim.engine_libp2p.PRELOAD`).

Each item is a first-use cost paid by every worker process before its first round, measured with
``P2PFL_SIM_PROFILE=sample`` (docs/benchmarks.md, "32 peers: where the CPU goes") and timed in a fresh
interpreter as first call / second call: ``numpy.random`` is imported lazily by numpy on first use
(7.8 / 0.2 ms: the learner's initial weights); threadpoolctl inspects the loaded libraries before it limits
BLAS to one thread (6.0 / 1.6 ms); cryptography's X25519 (the host's Noise key: 1.6 / 0.2 ms); multiaddr's
codecs (0.6 / 0.08 ms); reading an ``.npz`` (zipfile and its codec: 0.9 / 0.2 ms). A worker forked after this
starts with all of it done. Limiting the server's own BLAS to one thread is what every worker does first
anyway (``p2pfl.sim.worker.main``); the server itself never computes.
"""

from __future__ import annotations

import io

import multiaddr
import numpy as np
from libp2p.crypto.ed25519 import create_new_key_pair as ed25519_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as x25519_key_pair
from threadpoolctl import threadpool_limits

#: a syntactically valid peer address (its peer id is base58 of a multihash): parsing it loads every codec
#: a worker's static-peer addresses use
_ADDRESS = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"


def warm() -> None:
    """Pay the first-use costs listed in the module docstring in this process."""
    np.random.default_rng(0).standard_normal(2)
    threadpool_limits(limits=1, user_api="blas")
    x25519_key_pair()
    key = ed25519_key_pair(bytes(32))
    key.public_key.verify(b"warm", key.private_key.sign(b"warm"))
    multiaddr.Multiaddr(_ADDRESS)
    buf = io.BytesIO()
    np.savez(buf, a=np.zeros(1, np.float32))
    np.load(io.BytesIO(buf.getvalue()))["a"]


warm()
