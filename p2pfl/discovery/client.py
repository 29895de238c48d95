"""The bootstrap-registry client: register our record, discover and verify the network's peers, dial them."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import trio

from p2pfl.discovery.cache import PeerCache
from p2pfl.discovery.codec import (
    DEFAULT_TTL,
    MAX_ADDRS,
    MAX_PAGE,
    MAX_RESPONSE_BYTES,
    MAX_TTL,
    PROTOCOL_ID,
    decode_message,
    encode_message,
)
from p2pfl.discovery.errors import DiscoveryError, RecordError, RegistryError, RegistryUnavailableError
from p2pfl.discovery.records import _NETWORK_ID_RE, PeerRecord, normalize_addr
from p2pfl.errors import TransportError
from p2pfl.identity import Identity

if TYPE_CHECKING:
    # trio's own TaskStatus is shadowed by the trio-typing stubs that libp2p pulls in.
    from trio_typing import TaskStatus

log = logging.getLogger("p2pfl.discovery")


class DiscoveryTransport(Protocol):
    """The part of :class:`p2pfl.transport.base.Transport` discovery needs (both transports satisfy it)."""

    @property
    def peer_id(self) -> str: ...

    @property
    def listen_addrs(self) -> list[str]: ...

    async def request(
        self, peer_id: str, protocol: str, data: bytes, *, max_response: int, timeout: float
    ) -> bytes: ...

    async def connect(self, addr: str) -> str: ...

    def connected_peers(self) -> list[str]: ...


def _advertisable(addrs: Iterable[str], peer_id: str) -> list[str]:
    out = []
    for a in addrs:
        try:
            out.append(normalize_addr(a, peer_id))
        except RecordError:
            continue  # e.g. 0.0.0.0 listeners: not dialable, not advertised
    return out


async def dial_record(transport: DiscoveryTransport, record: PeerRecord) -> str | None:
    """Dial the addresses of a verified record in order; return the peer id on the first success."""
    for addr in record.addrs:
        try:
            return await transport.connect(addr)
        except TransportError as exc:
            log.debug("event=dial_failed peer=%s addr=%s error=%s", record.peer_id, addr, exc)
    return None


def _log_unexpected(registry: str, op: str, exc: Exception) -> None:
    """A registry's answer raised something other than a DiscoveryError/TransportError: a bug of ours (every
    refusal has a reason). One line at ERROR with the registry and the exception type; the call fails only."""
    log.error(
        "event=registry_unexpected_error registry=%s op=%s error=%s: %s",
        registry,
        op,
        type(exc).__name__,
        exc,
    )
    log.debug("traceback of the unexpected registry error", exc_info=exc)


class BootstrapClient:
    """Registers this peer with bootstrap registries and discovers its network's peers through them.

    Several registry addresses may be given: registration goes to every registry that answers (they do not
    share state), discovery merges what every answering registry returns (newest record per peer), and each
    record is verified here, so a lying registry can hide peers but never redirect us. With a ``cache``,
    every verified record is remembered and :meth:`find_peers` falls back to it when no registry answers.
    """

    def __init__(
        self,
        transport: DiscoveryTransport,
        identity: Identity,
        network_id: str,
        registries: Sequence[str],
        *,
        ttl: int = DEFAULT_TTL,
        advertise: Sequence[str] | None = None,
        cache: PeerCache | None = None,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if identity.peer_id != transport.peer_id:
            raise DiscoveryError("the identity must be the transport's own (registries check the requester)")
        if not _NETWORK_ID_RE.fullmatch(network_id):
            raise DiscoveryError(f"network id must be 1-64 characters of [A-Za-z0-9._-], got {network_id!r}")
        if not 1 <= ttl <= MAX_TTL:
            raise DiscoveryError(f"ttl must be in 1..{MAX_TTL} s")
        self.transport = transport
        self.identity = identity
        self.network_id = network_id
        self.registries = list(dict.fromkeys(registries))
        self.ttl = ttl
        self.advertise = list(advertise) if advertise is not None else None
        self.cache = cache
        self.timeout = timeout
        self._clock = clock
        #: where a discovery starts in a registry's list and which records it keeps (the OS's randomness)
        self._rng = rng if rng is not None else random.SystemRandom()
        self._registry_ids: dict[str, str] = {}
        self._last_seq = 0
        #: ttl granted by each registry at the last successful registration (addr -> seconds).
        self.granted: dict[str, float] = {}

    # ------------------------------------------------------------------------------------------ record
    def make_record(self) -> PeerRecord:
        """A freshly signed record of our current addresses (seq strictly above the previous one)."""
        addrs = self.advertise if self.advertise is not None else self.transport.listen_addrs
        usable = _advertisable(addrs, self.identity.peer_id)
        if not usable:
            raise DiscoveryError(f"no dialable address to advertise among {addrs!r}")
        self._last_seq = max(self._last_seq + 1, int(self._clock() * 1000))
        return PeerRecord.create(
            self.identity, self.network_id, usable[:MAX_ADDRS], ttl=self.ttl, seq=self._last_seq
        )

    @property
    def registry_peer_ids(self) -> frozenset[str]:
        """Peer ids of the registries dialled so far: connections that are not learning neighbours."""
        return frozenset(self._registry_ids.values())

    # --------------------------------------------------------------------------------------- requests
    async def _call(self, registry: str, fields: dict[str, Any]) -> dict[str, Any]:
        """One request to one registry: dial if needed, send, decode; error responses raise RegistryError."""
        with trio.fail_after(self.timeout):
            pid = self._registry_ids.get(registry)
            if pid is None or pid not in self.transport.connected_peers():
                pid = await self.transport.connect(registry)
                self._registry_ids[registry] = pid
            raw = await self.transport.request(
                pid,
                PROTOCOL_ID,
                encode_message(fields),
                max_response=MAX_RESPONSE_BYTES,
                timeout=self.timeout,
            )
        msg = decode_message(raw)
        if msg.get("ok") is True:
            return msg
        reason, detail = msg.get("error"), msg.get("detail", "")
        retry = msg.get("retry_after")
        raise RegistryError(
            reason if isinstance(reason, str) else "unknown",
            detail if isinstance(detail, str) else "",
            retry_after=float(retry) if isinstance(retry, int | float) and 0 <= retry <= 60 else None,
        )

    async def _call_logged(
        self, registry: str, fields: dict[str, Any], errors: dict[str, str] | None = None
    ) -> dict[str, Any] | None:
        """``_call`` that logs a failure (and notes it in ``errors[registry]``) and returns None."""
        try:
            return await self._call(registry, fields)
        except (TransportError, RecordError, RegistryError, trio.TooSlowError) as exc:
            log.info("event=registry_failed registry=%s op=%s error=%s", registry, fields.get("op"), exc)
            if errors is not None:
                errors[registry] = str(exc) or type(exc).__name__
            return None
        except Exception as exc:  # whatever a registry answers, the peer goes on (a bug of ours: one line)
            _log_unexpected(registry, str(fields.get("op")), exc)
            if errors is not None:
                errors[registry] = f"{type(exc).__name__}: {exc}"
            return None

    async def _each(self, fn: Callable[[str], Any]) -> dict[str, Any]:
        """Run ``await fn(addr)`` for every registry concurrently; map addr -> result (None = failed)."""
        results: dict[str, Any] = {}

        async def one(addr: str) -> None:
            results[addr] = await fn(addr)

        async with trio.open_nursery() as nursery:
            for addr in self.registries:
                nursery.start_soon(one, addr)
        return results

    async def register(self) -> int:
        """Sign a fresh record and register it with every registry; return how many accepted it.

        Raises :class:`RegistryUnavailableError` when none did; its message gives each registry's reason.
        """
        record = self.make_record()
        request = {"op": "register", "record": record.encoded}
        errors: dict[str, str] = {}

        async def one(addr: str) -> float | None:
            resp = await self._call_logged(addr, request, errors)
            ttl = resp.get("ttl") if resp is not None else None
            return float(ttl) if isinstance(ttl, int | float) and ttl > 0 else None

        results = await self._each(one)
        self.granted = {a: t for a, t in results.items() if t is not None}
        if not self.granted:
            why = "; ".join(f"{a}: {e}" for a, e in errors.items()) or "no registry configured"
            raise RegistryUnavailableError(f"no registry accepted our record ({why})")
        return len(self.granted)

    async def unregister(self) -> int:
        """Withdraw our registration from every registry we reach (e.g. on graceful shutdown)."""
        results = await self._each(
            lambda a: self._call_logged(a, {"op": "unregister", "net": self.network_id})
        )
        self.granted = {}
        return sum(r is not None for r in results.values())

    async def _discover_one(self, registry: str, max_records: int, page_size: int) -> list[PeerRecord] | None:
        """Up to ``max_records`` of a registry's records, from a random point of its list, wrapping round.

        A registry lists records by peer id, and a peer id is a key's hash its owner can grind: read from
        the start, a network larger than ``max_records`` would answer every peer with the same smallest
        ids. From a random point each record is as likely as any other to be read."""
        start = _random_cursor(self._rng)
        records = await self._page(registry, max_records, page_size, start, None)
        if records is None or len(records) >= max_records:
            return records
        wrapped = await self._page(registry, max_records - len(records), page_size, None, start)
        return records + (wrapped or [])  # an empty answer is an answer: a network nobody else is in

    async def _page(
        self, registry: str, max_records: int, page_size: int, cursor: str | None, until: str | None
    ) -> list[PeerRecord] | None:
        """Records listed after ``cursor`` (from the start: None) up to ``until`` (the end: None)."""
        records: list[PeerRecord] = []
        waits = 3  # rate-limit retries per discovery: a registry cannot keep us waiting forever
        while len(records) < max_records:
            fields: dict[str, Any] = {
                "op": "discover",
                "net": self.network_id,
                "limit": min(page_size, max_records - len(records)),
            }
            if cursor is not None:
                fields["cursor"] = cursor
            try:
                resp = await self._call(registry, fields)
            except RegistryError as exc:
                if exc.reason == "rate_limited" and exc.retry_after is not None and waits > 0:
                    waits -= 1
                    await trio.sleep(exc.retry_after)
                    continue
                log.info("event=registry_failed registry=%s op=discover error=%s", registry, exc)
                return records or None
            except (TransportError, RecordError, trio.TooSlowError) as exc:
                log.info("event=registry_failed registry=%s op=discover error=%s", registry, exc)
                return records or None
            except Exception as exc:  # whatever a registry answers, the peer goes on (a bug of ours)
                _log_unexpected(registry, "discover", exc)
                return records or None
            page = resp.get("records")
            if not isinstance(page, list):
                log.info("event=registry_bad_response registry=%s", registry)
                return records or None
            before = len(records)
            for raw in page:
                try:
                    record = PeerRecord.decode(raw, network_id=self.network_id)
                except RecordError as exc:  # a lying or broken registry: skip the record, count it
                    log.warning(
                        "event=record_rejected registry=%s reason=%s error=%s", registry, exc.reason, exc
                    )
                    continue
                except Exception as exc:  # a decoder that is not total: skip the record all the same
                    _log_unexpected(registry, "record", exc)
                    continue
                if until is not None and record.peer_id > until:
                    return records  # wrapped round to where this discovery started
                records.append(record)
            nxt = resp.get("next")
            # a page we kept nothing of ends the listing: a registry answering pages of records we reject,
            # each with a new cursor, would otherwise hold a discovery (and a rotation awaiting its
            # candidates) forever; every page that goes on adds a record, so max_records bounds the pages
            if not isinstance(nxt, str) or len(records) == before or nxt == cursor:
                break
            cursor = nxt
        return records

    async def discover(self, *, max_records: int = 1000, page_size: int = MAX_PAGE) -> list[PeerRecord]:
        """Verified records of our network's peers (not ours), merged over every registry that answers.

        Each registry is listed page by page (``page_size`` <= 100 records per request).
        Records are cached (and the cache saved) when a cache is set. Raises
        :class:`RegistryUnavailableError` when no registry answered.
        """
        if not 1 <= page_size <= MAX_PAGE:
            raise DiscoveryError(f"page_size must be in 1..{MAX_PAGE}")
        results = await self._each(lambda a: self._discover_one(a, max_records + 1, page_size))  # +1: us
        answered = [r for r in results.values() if r is not None]
        if not answered:
            raise RegistryUnavailableError(f"no registry answered discovery (tried {len(self.registries)})")
        best: dict[str, PeerRecord] = {}
        for page in answered:
            for rec in page:
                if rec.peer_id == self.identity.peer_id:
                    continue
                old = best.get(rec.peer_id)
                if old is None or rec.seq > old.seq:
                    best[rec.peer_id] = rec
        # which records are kept of more than max_records is drawn, not sorted: seq is the signer's to set
        found = list(best.values())
        self._rng.shuffle(found)
        found = found[:max_records]
        if self.cache is not None and found:
            now = self._clock()
            for rec in found:
                self.cache.add(rec, seen=now)
            self._save_cache()
        return found

    async def find_peers(self, *, max_records: int = 1000) -> list[PeerRecord]:
        """Peers to dial: what the registries return first, then cached peers they did not mention.

        Never raises for unavailable registries: with every registry down this is the cache alone, which is
        how a restarted peer rejoins its network.
        """
        try:
            found = await self.discover(max_records=max_records)
        except RegistryUnavailableError:
            log.info("event=registries_down network=%s using=cache", self.network_id)
            found = []
        if self.cache is not None:
            seen = {r.peer_id for r in found}
            found += [r for r in self.cache.records() if r.peer_id not in seen]
        return found[:max_records]

    async def status(self, registry: str) -> dict[str, Any]:
        """The status map of one registry (raises on failure)."""
        return await self._call(registry, {"op": "status"})

    def renew_interval(self) -> float:
        """Seconds until the next renewal: a third of the shortest granted ttl (1 s at least)."""
        ttl = min(self.granted.values(), default=float(self.ttl))
        return max(1.0, ttl / 3.0)

    async def run_renewal(
        self, *, retry: float = 5.0, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Register now, then keep the registration alive until cancelled (failures are retried, not raised).

        ``task_status.started()`` is called after the first attempt, whether it reached a registry or not,
        so ``await nursery.start(client.run_renewal)`` never blocks a peer whose registries are all down.
        """
        started = False
        while True:
            try:
                await self.register()
                delay = self.renew_interval()
            except DiscoveryError as exc:  # none answered, or no address to advertise yet
                log.info("event=registration_failed network=%s error=%s", self.network_id, exc)
                delay = min(retry, self.renew_interval())
            if not started:
                started = True
                task_status.started()
            await trio.sleep(delay)

    def _save_cache(self) -> None:
        if self.cache is None:
            return
        try:
            self.cache.save()
        except OSError as exc:
            log.warning("event=peer_cache_save_failed path=%s error=%s", self.cache.path, exc)


def _random_cursor(rng: random.Random) -> str:
    """A random point of a registry's list: the peer id of a random key. Peer ids are key hashes of one
    length, sorted as numbers, so the id of a random key splits them as a uniform point does."""
    return Identity(rng.randbytes(32)).peer_id
