from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from p2pfl.identity import Identity
from p2pfl.wire import Header, Meta, arch_digest, model_digest, payload_parts, seal

ROOT = Path(__file__).resolve().parents[1]


def pytest_sessionstart(session: pytest.Session) -> None:
    """Stop at once, with the fix, when the tests would run another checkout's p2pfl.sim/p2pfl.bootstrap
    (an editable install made from elsewhere, or one made before they moved under p2pfl)."""
    import importlib

    for name, folder in (("p2pfl", "p2pfl"), ("p2pfl.sim", "simulations"), ("p2pfl.bootstrap", "bootstrap")):
        try:
            where = Path(importlib.import_module(name).__file__ or "").resolve().parent
        except ImportError as exc:
            where = None
            why = f"cannot import {name} ({exc})"
        else:
            why = f"{name} resolves to {where}"
        if where != ROOT / folder:
            pytest.exit(
                f"{why}, not to {ROOT / folder}: run `pip install -e .` from this checkout ({ROOT})",
                returncode=pytest.ExitCode.USAGE_ERROR,
            )


ALICE_SEED = bytes(range(32))
BOB_SEED = bytes(range(32, 64))


@pytest.fixture
def alice() -> Identity:
    return Identity(ALICE_SEED)


@pytest.fixture
def bob() -> Identity:
    return Identity(BOB_SEED)


def make_envelope(
    identity: Identity,
    tensors: dict[str, np.ndarray] | None = None,
    *,
    network_id: str = "testnet",
    seq: int = 1,
    inline: bool = True,
    **overrides: object,
) -> bytes:
    """A valid sealed delta envelope; ``overrides`` replace header fields."""
    delta = tensors if tensors is not None else {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    parts, pdigest, psize = payload_parts(delta)
    fields: dict[str, object] = dict(
        kind="delta",
        network_id=network_id,
        sender=identity.peer_id,
        seq=seq,
        base=model_digest({k: np.zeros_like(v) for k, v in delta.items()}),
        result=model_digest(delta),
        arch=arch_digest(delta),
        payload_digest=pdigest,
        payload_size=psize,
        meta=Meta(samples=10, loss=0.25, round=seq),
        timestamp_ms=1_700_000_000_000,
    )
    fields.update(overrides)
    return seal(identity, Header(**fields), parts if inline else None)  # type: ignore[arg-type]


@pytest.fixture
def envelope_factory() -> Callable[..., bytes]:
    return make_envelope


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A run that collected no tests is a broken run, not a green one (pytest's exit code 5)."""
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
