"""Peer discovery: signed peer records, the bootstrap-registry client and the on-disk peer cache.

Spec in ``docs/bootstrap.md``. In one breath:

* A :class:`PeerRecord` says "peer P of network N is reachable at these addresses", signed by P's own
  Ed25519 key (domain-separated). Anyone can verify it from P's peer id alone, so a registry (or a cache file,
  or another peer) that relays it cannot forge or alter addresses: it can only withhold records.
* :class:`BootstrapClient` registers our record with every bootstrap registry that answers, renews it, and
  discovers the network's peers from all registries that answer, verifying every record it receives.
* :class:`PeerCache` keeps the verified records we have met in the peer's state directory (atomic writes,
  bounded), so a restarted peer can rejoin through it when every registry is down.

The protocol ``/p2pfl/bootstrap/1`` rides on the transport's request/response primitive: one msgpack map per
request (``op`` = ``register`` | ``unregister`` | ``discover`` | ``status``), one msgpack map per response
(``ok`` true with results, or ``ok`` false with a stable ``error`` slug and a ``detail`` text).

The package, by concern: :mod:`.errors` (every refusal, with a reason slug), :mod:`.codec` (the protocol's
bounds and strict msgpack), :mod:`.records` (signed records and addresses; pure), :mod:`.policy` (which
discovered peers to dial; pure), :mod:`.cache` (the peer cache file) and :mod:`.client` (the registry client,
the only part that uses a transport). It imports neither libp2p nor torch, so the registry service and the
peer share it cheaply.
"""

from __future__ import annotations

from p2pfl.discovery.cache import PeerCache
from p2pfl.discovery.client import BootstrapClient, DiscoveryTransport, dial_record
from p2pfl.discovery.codec import (
    DEFAULT_TTL,
    MAX_ADDR_LEN,
    MAX_ADDRS,
    MAX_PAGE,
    MAX_RECORD_BYTES,
    MAX_REQUEST_BYTES,
    MAX_RESPONSE_BYTES,
    MAX_TTL,
    PROTOCOL_ID,
    RECORD_VERSION,
    SIGNING_DOMAIN,
    decode_message,
    encode_message,
)
from p2pfl.discovery.errors import (
    DiscoveryError,
    MalformedRecordError,
    NetworkMismatchError,
    NonCanonicalRecordError,
    OversizeRecordError,
    PeerMismatchError,
    RecordError,
    RecordSchemaError,
    RecordSignatureError,
    RegistryError,
    RegistryUnavailableError,
)
from p2pfl.discovery.policy import select_dials
from p2pfl.discovery.records import PeerRecord, normalize_addr
from p2pfl.discovery.records import _body_bytes as _body_bytes  # for the fuzz harness

__all__ = [
    "DEFAULT_TTL",
    "MAX_ADDRS",
    "MAX_ADDR_LEN",
    "MAX_PAGE",
    "MAX_RECORD_BYTES",
    "MAX_REQUEST_BYTES",
    "MAX_RESPONSE_BYTES",
    "MAX_TTL",
    "PROTOCOL_ID",
    "RECORD_VERSION",
    "SIGNING_DOMAIN",
    "BootstrapClient",
    "DiscoveryError",
    "DiscoveryTransport",
    "MalformedRecordError",
    "NetworkMismatchError",
    "NonCanonicalRecordError",
    "OversizeRecordError",
    "PeerCache",
    "PeerMismatchError",
    "PeerRecord",
    "RecordError",
    "RecordSchemaError",
    "RecordSignatureError",
    "RegistryError",
    "RegistryUnavailableError",
    "decode_message",
    "dial_record",
    "encode_message",
    "normalize_addr",
    "select_dials",
]
