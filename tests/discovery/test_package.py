"""The discovery package's shape: the old import paths still work, and its pure parts stay pure."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import p2pfl.discovery
from p2pfl.discovery import cache, client, codec, errors, policy, records

PACKAGE = Path(p2pfl.discovery.__file__).parent
REPO = PACKAGE.parents[1]
MODULES = (errors, codec, records, policy, cache, client)

#: Every name another part of the repository imports from ``p2pfl.discovery`` (service, CLI, peer, tests).
IMPORTED_ELSEWHERE = (
    "DEFAULT_TTL",
    "MAX_ADDRS",
    "MAX_PAGE",
    "MAX_RECORD_BYTES",
    "MAX_REQUEST_BYTES",
    "PROTOCOL_ID",
    "SIGNING_DOMAIN",
    "BootstrapClient",
    "DiscoveryError",
    "NetworkMismatchError",
    "NonCanonicalRecordError",
    "PeerCache",
    "PeerMismatchError",
    "PeerRecord",
    "RecordError",
    "RecordSchemaError",
    "RecordSignatureError",
    "RegistryError",
    "RegistryUnavailableError",
    "_body_bytes",
    "decode_message",
    "dial_record",
    "encode_message",
    "normalize_addr",
)


def _imports(module: object) -> set[str]:
    tree = ast.parse(Path(str(getattr(module, "__file__", ""))).read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("name", IMPORTED_ELSEWHERE)
def test_the_old_import_paths_resolve_to_the_submodules_objects(name: str) -> None:
    obj = getattr(p2pfl.discovery, name)
    homes = [m for m in MODULES if getattr(m, name, None) is obj]
    assert homes, name


def test_every_public_name_resolves() -> None:
    for name in p2pfl.discovery.__all__:
        assert getattr(p2pfl.discovery, name) is not None


@pytest.mark.parametrize("module", [errors, codec, records, policy], ids=lambda m: m.__name__)
def test_records_codec_and_errors_are_pure(module: object) -> None:
    """No transport, no event loop, no files: records are checked the same in the registry and the peer."""
    banned = {"trio", "os", "pathlib", "socket", "p2pfl.fsutil", "p2pfl.transport", "p2pfl.discovery.client"}
    assert set() == {m for m in _imports(module) if m in banned or m.split(".")[0] in {"trio", "libp2p"}}


def test_only_the_client_uses_the_event_loop_and_only_the_cache_writes_files() -> None:
    users = {m.__name__ for m in MODULES if "trio" in _imports(m)}
    writers = {m.__name__ for m in MODULES if "p2pfl.fsutil" in _imports(m)}
    assert ({"p2pfl.discovery.client"}, {"p2pfl.discovery.cache"}) == (users, writers)


def test_no_discovery_module_imports_numpy_libp2p_or_torch() -> None:
    heavy = {"numpy", "libp2p", "torch"}
    for module in MODULES:
        assert set() == {m for m in _imports(module) if m.split(".")[0] in heavy}, module.__name__


def test_importing_discovery_pulls_in_neither_libp2p_nor_torch() -> None:
    """The registry service imports it; ``import p2pfl`` itself brings numpy (the wire format) along."""
    code = (
        "import sys, p2pfl.discovery\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'libp2p', 'torch'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO, check=True
    ).stdout.strip()
    assert "[]" == out
