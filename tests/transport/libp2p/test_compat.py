"""The compat modules (compat.py and compat_*.py) are the one place that touches py-libp2p internals, and
compat.py refuses a version it was not written for at import, with an error that says what to do."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.score import PeerScorer

import p2pfl
from p2pfl.errors import P2PFLError, TransportError
from p2pfl.transport.libp2p import (
    Libp2pTransport,
    UnsupportedLibp2pError,
    compat,
    compat_gossipsub,
    compat_pubsub,
    compat_swarm,
)

PACKAGE = Path(p2pfl.__file__).parent
COMPAT = Path(compat.__file__)

#: Attributes of py-libp2p objects that only compat.py may use, distinctive enough to flag anywhere.
INTERNAL_NAMES = frozenset(
    {
        "_forget_all_subscriptions",
        "_handle_dead_peer",
        "_negative_peer_cache",
        "_teardown_if_connected",
        "auto_connector",
        "equivocation_detection",
        "peer_queues",
        "peer_topics",
        "read_writer",
        "secured_conn",
    }
)
#: Generic names that are internals when read off a py-libp2p object (the engine has a ``scorer`` too).
HELD_INTERNAL_NAMES = frozenset({"direction", "mesh", "peers", "scorer"})
#: Names under which p2pfl code holds py-libp2p objects: a private attribute read off one is an internal.
HOLDERS = frozenset({"_host", "_pubsub", "_gossipsub", "_scorer", "_network", "muxed_conn"})
HOLDER_NAMES = frozenset({"host", "network", "swarm", "pubsub", "gossipsub", "scorer", "conn", "stream"})


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def internal_touches(source: str) -> list[str]:
    """Every place in ``source`` that reaches into py-libp2p internals, as ``line: what``."""
    tree = ast.parse(source)
    from_libp2p = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "libp2p"
        for alias in node.names
    }
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base = node.value
            held = (isinstance(base, ast.Attribute) and base.attr in HOLDERS) or (
                isinstance(base, ast.Name) and base.id in HOLDER_NAMES
            )
            if node.attr in INTERNAL_NAMES or (
                held and (_private(node.attr) or node.attr in HELD_INTERNAL_NAMES)
            ):
                found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) >= 2:
            fn, name = node.func.id, node.args[1]
            literal = name.value if isinstance(name, ast.Constant) and isinstance(name.value, str) else ""
            reflective = fn in {"getattr", "setattr", "hasattr", "delattr"}
            if reflective and (literal in INTERNAL_NAMES | HELD_INTERNAL_NAMES or _private(literal)):
                found.append(f"{node.lineno}: {fn}(..., {literal!r})")
        elif isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name) and b.id in from_libp2p for b in node.bases
        ):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _private(item.name):
                    found.append(f"{item.lineno}: overrides {node.name}.{item.name}")
    return found


def _exec_fresh_compat() -> ModuleType:
    """Run compat.py's import-time checks again in a throwaway module (the real one stays untouched)."""
    spec = importlib.util.spec_from_file_location("_p2pfl_compat_probe", COMPAT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_unsupported_libp2p_version_fails_at_import_saying_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata, "version", lambda name: "0.9.0" if name == "libp2p" else real(name)
    )
    with pytest.raises(TransportError) as info:
        _exec_fresh_compat()
    assert "UnsupportedLibp2pError" == type(info.value).__name__
    assert "found 0.9.0" in str(info.value) and "pin libp2p==0.8.1" in str(info.value)


def test_a_renamed_private_fails_at_import_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(Pubsub, "_teardown_if_connected")
    with pytest.raises(TransportError, match=r"without Pubsub\._teardown_if_connected"):
        _exec_fresh_compat()


def test_the_supported_version_imports_cleanly() -> None:
    assert importlib.metadata.version("libp2p") in compat.SUPPORTED
    assert _exec_fresh_compat().SUPPORTED == compat.SUPPORTED


def test_unsupported_libp2p_is_a_transport_error_with_a_reason() -> None:
    assert issubclass(UnsupportedLibp2pError, TransportError)
    assert issubclass(UnsupportedLibp2pError, P2PFLError)
    assert "unsupported_libp2p" == UnsupportedLibp2pError.reason


@pytest.mark.parametrize(("cls", "name"), compat.REQUIRED_ATTRS, ids=lambda x: getattr(x, "__name__", x))
def test_every_required_private_exists_on_the_supported_version(cls: type, name: str) -> None:
    assert hasattr(cls, name)


def test_every_required_instance_attribute_exists_on_a_built_host() -> None:
    t = Libp2pTransport(seed=bytes(32), network_id="n", config=None)
    objs: dict[str, Any] = {"network": t.host.get_network(), "pubsub": t._pubsub, "gossipsub": t._gossipsub}
    missing = [(w, n) for w, n in compat.REQUIRED_INSTANCE_ATTRS if not hasattr(objs[w], n)]
    assert [] == missing


def test_a_host_missing_an_instance_attribute_is_refused() -> None:
    t = Libp2pTransport(seed=bytes(32), network_id="n", config=None)
    network = SimpleNamespace(auto_connector=None)  # no _negative_peer_cache
    with pytest.raises(UnsupportedLibp2pError, match=r"network\._negative_peer_cache"):
        compat.check_instances(network, t._pubsub, t._gossipsub)  # type: ignore[arg-type]


def _is_compat(path: Path) -> bool:
    """compat.py and its siblings compat_*.py (the Noise and yamux fast paths) may touch internals."""
    return path.parent == COMPAT.parent and (path == COMPAT or path.name.startswith("compat_"))


def test_only_compat_touches_libp2p_internals() -> None:
    touches = {
        str(path.relative_to(PACKAGE)): found
        for path in sorted(PACKAGE.rglob("*.py"))
        if not _is_compat(path) and (found := internal_touches(path.read_text()))
    }
    assert {} == touches


def test_compat_holds_the_touches_it_documents() -> None:
    """The scanner sees the compat modules' own touches: it is not blind (it found each in the old single
    module, before compat.py was split by what it touches)."""
    found = " ".join(
        touch
        for path in sorted(COMPAT.parent.glob("*.py"))
        if _is_compat(path)
        for touch in internal_touches(path.read_text())
    )
    for what in (
        "overrides HardenedPubsub._teardown_if_connected",
        "._handle_dead_peer",
        "._forget_all_subscriptions",
        ".peer_queues",
        "'_negative_peer_cache'",
        "'auto_connector'",
        "'equivocation_detection'",
        ".mesh",
        ".peer_topics",
        ".scorer",
        "'direction'",
    ):
        assert what in found, (what, found)


def test_every_scorer_method_p2pfl_calls_is_checked_at_import() -> None:
    """The transport holds gossipsub's ``PeerScorer`` as ``_scorer`` and calls its methods directly: each one
    it calls must be in ``REQUIRED_ATTRS``, so a py-libp2p that renames it fails at import, not on the first
    eviction (``remove_peer``) or penalty."""
    called = {
        node.func.attr
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "_scorer"
        and isinstance(node.func.value.value, ast.Name)
        and node.func.value.value.id == "self"
    }
    assert {"penalize_behavior", "remove_peer", "score"} <= called  # the scan sees the known calls
    checked = {name for cls, name in compat.REQUIRED_ATTRS if cls is PeerScorer}
    assert set() == called - checked


def test_the_split_compat_keeps_every_public_name() -> None:
    """compat.py was split into compat_pubsub, compat_gossipsub and compat_swarm; every name it exported is
    still importable from it, and is the very object its new module defines."""
    for name in compat.__all__:
        assert hasattr(compat, name), name
    assert compat.HardenedPubsub is compat_pubsub.HardenedPubsub
    assert compat.LeanGossipSub is compat_gossipsub.LeanGossipSub
    assert compat.tcp_socket_of is compat_swarm.tcp_socket_of


@pytest.mark.parametrize(
    "source",
    [
        "network._negative_peer_cache.evict(pid)",
        "self._pubsub.peer_queues.values()",
        "getattr(network, 'auto_connector', None).start = f",
        "self._gossipsub.equivocation_detection.clear()",
        "self._host._private_thing",
        "conn._direction",
        "from libp2p.pubsub.pubsub import Pubsub\nclass P(Pubsub):\n    def _handle_dead_peer(self, p): ...",
    ],
)
def test_the_scanner_flags_each_kind_of_touch(source: str) -> None:
    assert internal_touches(source)


def test_the_scanner_leaves_our_own_privates_alone() -> None:
    assert [] == internal_touches("self._topics[p] = t\nself._t._peer_allowed(p)\nself._config.cleanup_s")
