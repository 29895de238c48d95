"""One typed schema for a peer's settings: :class:`PeerConfig` and the metadata of its fields.

Each field says where its TOML key lives (``section``, and ``key`` when the TOML name differs from the field
name) and, for the knobs a simulation scenario sets, which scenario section holds it (``sim``, ``sim_key``).
The TOML loader (:mod:`p2pfl.config.loader`) and the simulation's scenario parser build their key tables
from this metadata, and the engine configs are derived from a ``PeerConfig`` by field name
(:func:`derive`), so a setting, its type and its default are each written once: an engine config owns its
defaults and ``PeerConfig`` reads them from there.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from p2pfl.aggregation import AggregationConfig
from p2pfl.errors import ConfigError
from p2pfl.privacy.config import PrivacyConfig
from p2pfl.protocol import ProtocolConfig
from p2pfl.protocol.mixing import MixConfig
from p2pfl.protocol.pacing import PacingConfig
from p2pfl.protocol.ratelimit import RateConfig
from p2pfl.protocol.solo import SOLO_ROUNDS, SoloConfig
from p2pfl.rollout.config import RolloutConfig
from p2pfl.scoring import ScoringConfig
from p2pfl.secagg.config import SecAggConfig

T = TypeVar("T")

#: TOML sections holding PeerConfig keys ([aggregation] and the [scoring] thresholds are the nested configs)
SECTIONS = ("peer", "protocol", "scoring", "access", "metrics")

#: ProtocolConfig fields a PeerConfig does not set (the engine's own default is used), and why
PROTOCOL_EXCLUDED = {
    "payload_cache": "an internal cache size, not a network or policy setting",
    "snapshot_retry_s": "an internal retry pacing of the engine",
    "limits": "decoder bounds (p2pfl.wire.Limits) for tests and embedders; the wire defaults fit the network",
}


def setting(
    default: Any = MISSING,
    *,
    section: str | None,
    key: str | None = None,
    sim: str | None = None,
    sim_key: str | None = None,
    default_factory: Any = MISSING,
) -> Any:
    """A PeerConfig field: ``section`` is its TOML section (``None``: no TOML form), ``key`` its TOML name
    when it differs from the field name, ``sim``/``sim_key`` its scenario section and name (if any)."""
    metadata = {"section": section, "key": key, "sim": sim, "sim_key": sim_key}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def default_of(cls: Any, name: str) -> Any:
    """The default of dataclass field ``name`` of ``cls`` (so PeerConfig repeats no engine default)."""
    return cls.__dataclass_fields__[name].default


@dataclass(frozen=True)
class PeerConfig:
    """Everything a peer needs besides its learner; see ``docs/peer.md`` for the TOML form."""

    network_id: str = setting(section="peer", sim="run")
    listen: str = setting("/ip4/127.0.0.1/tcp/0", section="peer")
    static_peers: tuple[str, ...] = setting((), section="peer")
    bootstrap: tuple[str, ...] = setting((), section="peer")
    state_dir: Path | None = setting(None, section="peer")  # noqa: RUF009
    local_steps: int = setting(20, section="peer")
    round_interval_s: float = setting(0.0, section="peer")
    wait_fraction: float = setting(0.75, section="peer", sim="run")
    #: Wait for the neighbours' versions between publishing the trained model and mixing, instead of before
    #: training, so each mix takes the same round's models, as FedAvg does (p2pfl.protocol.pacing).
    wait_before_mix: bool = setting(default_of(PacingConfig, "wait_before_mix"), section="peer", sim="run")
    #: Mixing (gossip) steps per round: after the trained model's mix, ``mix_steps - 1`` more times wait for
    #: the neighbours' newer versions, publish the own mix and mix again (p2pfl.protocol.mixing).
    mix_steps: int = setting(default_of(MixConfig, "mix_steps"), section="peer", sim="run")
    min_neighbours: int = setting(1, section="peer")
    #: Link rotation: after every ``rotate_every``-th round dial peers not linked yet, then close the oldest
    #: links, keeping ``rotate_degree`` learning links (0: ``max_neighbours``); ``rotate_every = 0``: off
    #: (p2pfl.protocol.rotation, docs/learning.md "Link rotation").
    rotate_every: int = setting(0, section="peer", sim="run")
    rotate_degree: int = setting(0, section="peer", sim="run")
    #: How long a link that ended rests while rotating, in link lifetimes (``rotate_every * rotate_degree``
    #: rounds): its peer is neither dialled nor mixed meanwhile, whichever end closed it (and with
    #: ``mix_scope = "connected"`` not let link back), so an attacker that re-dials whoever closes its link
    #: is not kept as the youngest link forever; 0: off (p2pfl.protocol.rotation).
    rotate_cooldown: float = setting(1.0, section="peer", sim="run")
    max_neighbours: int = setting(16, section="peer")
    discover_interval_s: float = setting(10.0, section="peer")
    bootstrap_ttl: int = setting(120, section="peer")
    advertise: tuple[str, ...] = setting((), section="peer")
    start_timeout_s: float = setting(60.0, section="peer")
    #: inbound connections one source address (an IPv4 address, an IPv6 /64) may start per second, up to
    #: ``inbound_burst`` at once, and handshakes it may have in flight; loopback is exempt
    #: (p2pfl.transport.inbound; libp2p only)
    inbound_rate: float = setting(4.0, section="peer")
    inbound_burst: int = setting(64, section="peer")
    inbound_handshakes: int = setting(8, section="peer")
    #: solo rounds (no neighbour's model in the mix) in a row after which the peer pauses until a neighbour's
    #: version arrives; 0: never pause (p2pfl.protocol.solo)
    solo_rounds: int = setting(SOLO_ROUNDS, section="peer")
    max_round_wait_s: float = setting(10.0, section="peer", sim="run")
    aggregation: AggregationConfig = setting(section=None, default_factory=AggregationConfig)  # noqa: RUF009
    scoring: ScoringConfig = setting(section=None, default_factory=ScoringConfig)  # noqa: RUF009
    #: the per-sender, per-relay and proof token buckets applied before any signature is verified ([rates])
    rates: RateConfig = setting(section=None, default_factory=RateConfig)  # noqa: RUF009
    scoring_enabled: bool = setting(True, section="scoring", key="enabled", sim="scoring", sim_key="enabled")
    val_scoring: bool = setting(True, section="scoring", sim="scoring")
    inline_limit: int = setting(default_of(ProtocolConfig, "inline_limit"), section="protocol")
    max_staleness_s: float = setting(default_of(ProtocolConfig, "max_staleness_s"), section="protocol")
    max_delta_norm: float | None = setting(default_of(ProtocolConfig, "max_delta_norm"), section="protocol")
    forget_after_s: float | None = setting(default_of(ProtocolConfig, "forget_after_s"), section="protocol")
    #: The freshness window of a gossiped delta's signed timestamp (p2pfl.protocol.freshness): older than
    #: ``max_version_age_s`` or newer than ``max_clock_skew_s`` by the receiver's clock, it is refused.
    max_version_age_s: float = setting(default_of(ProtocolConfig, "max_version_age_s"), section="protocol")
    max_clock_skew_s: float = setting(default_of(ProtocolConfig, "max_clock_skew_s"), section="protocol")
    codec: str = setting(default_of(ProtocolConfig, "codec"), section="protocol", sim="run")
    allow: frozenset[str] | None = setting(None, section="access")
    #: The signed roster of a closed network (docs/membership.md): only its members (and peers certified by
    #: its orgs) may connect and announce. ``None``: no roster.
    roster: Path | None = setting(None, section="access")  # noqa: RUF009
    #: ``[access] open``: the explicit choice to run without a roster (anyone with a key may join). The
    #: ``p2pfl peer`` config loader requires a roster or ``open = true``; PeerConfig itself leaves it unset
    #: (``None``), so embedding ``Peer`` in Python code and simulations run open without saying so.
    open_network: bool | None = setting(None, section="access", key="open")
    #: Member certificates this peer holds (its own, or an org gateway's for its org's nodes): served to
    #: neighbours in the roster exchange so that certified members are admitted across the network.
    certificates: tuple[Path, ...] = setting((), section="access")
    #: How often the roster file is re-read and neighbours are asked for a newer roster, and how often
    #: connected peers are re-checked against it (expiry, revocation).
    roster_refresh_s: float = setting(30.0, section="access")
    #: Whose replicas enter the mix: connected peers this peer linked to itself ("chosen": static peers, its
    #: discovery's and rotation's dials, and the peers a host names with ``Peer.connect``/``Peer.choose``;
    #: a peer that never chose and has no registries mixes every connected peer), every connected peer
    #: ("connected"), or every fresh replica ("all"). With "chosen" a member that dials every peer is in no
    #: mix it was not chosen for (docs/learning.md, "Mixing only chosen links").
    mix_scope: str = setting("chosen", section="protocol", sim="run")
    rollback_margin: float | None = setting(None, section="protocol")
    rollback_warmup: int = setting(5, section="protocol")
    #: Refuse a mix that loses more than this fraction of the freshly trained model's validation accuracy
    #: (keep the trained model for the round instead). The own data is the one thing no neighbour can fake: a
    #: peer whose neighbourhood is mostly hostile (4 of 6 sign-flippers, measured: accuracy 0.0 without the
    #: guard) falls back to learning alone rather than adopting a poisoned model. Honest non-IID mixes were
    #: measured up to 25 points below the trained model on the own split, hence 0.5 where it is used. A
    #: fraction, not a number of points: after one round the trained model may be at 43%, and a poisoned mix
    #: at 10% was then within 0.5 points of it, so the guard let the first poisoned mix in and never tripped
    #: again (the model it protects was gone; 2 of 6 runs of the outnumbered-peer test). Off (``None``) by
    #: default: on very skewed data a peer whose validation split holds one class keeps refusing the general
    #: mix and learns alone (docs/protocol.md has the numbers).
    mix_guard_margin: float | None = setting(None, section="protocol", sim="scoring", sim_key="mix_guard")
    #: Rounds (since start) before the guard acts. In the first rounds a mix of barely trained non-IID models
    #: is often far worse on the own split than the overfit trained model (measured: 17% vs 83% at round 2,
    #: no attack), so the guard then refuses some honest mixes for a few rounds. A warm-up avoids that but
    #: lets a hostile majority ruin the model before the guard acts (then the trained model is as bad as the
    #: mix and the guard never trips: measured 10% with a warm-up of 2, 89% with none), hence 0.
    mix_guard_warmup: int = setting(0, section="protocol")
    #: Pacing that no single neighbour controls (p2pfl.protocol.pacing): a neighbour whose last version is
    #: older than ``period_factor`` times the neighbours' median publishing period (or than ``period_factor``
    #: x ``work_factor`` x our own last round's work, if shorter; never sooner than ``min_late_s``) is late
    #: and not waited for.
    period_factor: float = setting(default_of(PacingConfig, "period_factor"), section="protocol")
    work_factor: float = setting(default_of(PacingConfig, "work_factor"), section="protocol")
    min_late_s: float = setting(default_of(PacingConfig, "min_late_s"), section="protocol")
    join_on_start: bool = setting(True, section="protocol")
    join_quorum: int = setting(default_of(ProtocolConfig, "join_quorum"), section="protocol")
    #: Bound of the join's snapshot requests: the join holds up the first round, and a request stuck on a
    #: stalled connection otherwise waits the whole ``request_timeout_s`` (a peer started 40 s late and
    #: never caught up in a registry test).
    join_timeout_s: float = setting(10.0, section="protocol")
    request_timeout_s: float = setting(30.0, section="peer")
    max_model_bytes: int = setting(256 * 1024 * 1024, section="protocol")
    status_interval_s: float = setting(10.0, section="peer")
    reconnect_interval_s: float = setting(5.0, section=None)
    #: How long an eviction lasts (doubling per repeat, up to a day); ``inf``: evictions are final.
    readmit_after_s: float = setting(default_of(ProtocolConfig, "readmit_after_s"), section="protocol")
    #: ``HOST:PORT`` of the Prometheus endpoint (``[metrics] listen``); None: no metrics (docs/operations.md)
    metrics_listen: str | None = setting(None, section="metrics", key="listen")
    #: serving vs training version, shadow and canary (the ``[rollout]`` section; docs/rollout.md)
    rollout: RolloutConfig = setting(section=None, default_factory=RolloutConfig)  # noqa: RUF009
    #: the secure-aggregation group (the ``[secagg]`` section; docs/secagg.md)
    secagg: SecAggConfig = setting(section=None, default_factory=SecAggConfig)  # noqa: RUF009
    #: differential privacy (``[privacy]``; docs/privacy.md): off here; ``p2pfl init`` writes it on
    privacy: PrivacyConfig = setting(section=None, default_factory=PrivacyConfig)  # noqa: RUF009

    @property
    def learning_degree(self) -> int:
        """The learning links discovery dials up to: ``rotate_degree`` with link rotation on (discovery
        must not refill what rotation closes), else ``max_neighbours``."""
        if self.rotate_every and self.rotate_degree:
            return self.rotate_degree
        return self.max_neighbours

    @property
    def cooldown_rounds(self) -> int:
        """How many rounds a link that ended rests (``rotate_cooldown`` link lifetimes)."""
        return round(self.rotate_cooldown * self.rotate_every * self.learning_degree)

    def __post_init__(self) -> None:
        if not isinstance(self.local_steps, int) or self.local_steps < 1:
            raise _bad("local_steps", f"must be an integer >= 1, got {self.local_steps!r}")
        MixConfig(self.mix_steps)  # raises ConfigError("peer", "mix_steps", ...)
        if not isinstance(self.max_neighbours, int) or self.max_neighbours < 1:
            raise _bad("max_neighbours", f"must be an integer >= 1, got {self.max_neighbours!r}")
        if not isinstance(self.bootstrap_ttl, int) or not 1 <= self.bootstrap_ttl <= 7200:
            raise _bad(
                "bootstrap_ttl", f"must be an integer in 1..7200 (seconds), got {self.bootstrap_ttl!r}"
            )
        SoloConfig(self.solo_rounds)  # (raises ConfigError("peer", "solo_rounds", ...))
        for name in ("rotate_every", "rotate_degree"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1_000_000:
                raise _bad(name, f"must be an integer in 0..1000000, got {value!r}")
        cool = self.rotate_cooldown
        if not isinstance(cool, int | float) or isinstance(cool, bool) or not 0 <= cool <= 100:
            raise _bad("rotate_cooldown", f"must be a number in [0, 100] (link lifetimes), got {cool!r}")
        rate = self.inbound_rate
        if not isinstance(rate, int | float) or isinstance(rate, bool) or not 0 < rate < float("inf"):
            raise _bad("inbound_rate", f"must be a positive number (connections per second), got {rate!r}")
        for name in ("inbound_burst", "inbound_handshakes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1_000_000:
                raise _bad(name, f"must be an integer in 1..1000000, got {value!r}")
        if not isinstance(self.min_neighbours, int) or self.min_neighbours < 0:
            raise _bad("min_neighbours", f"must be an integer >= 0, got {self.min_neighbours!r}")
        if not isinstance(self.wait_fraction, int | float) or not 0 <= self.wait_fraction <= 1:
            raise _bad("wait_fraction", f"must be in [0, 1], got {self.wait_fraction!r}")
        for name in ("period_factor", "work_factor", "min_late_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise _bad(name, f"must be a positive number, got {value!r}")
        if self.mix_scope not in ("connected", "all", "chosen"):
            raise _bad("mix_scope", f"must be 'connected', 'all' or 'chosen', got {self.mix_scope!r}")
        if self.rollback_margin is not None and not 0 < self.rollback_margin < 1:
            raise _bad("rollback_margin", f"must be in (0, 1) or unset, got {self.rollback_margin!r}")
        if not isinstance(self.mix_guard_warmup, int) or self.mix_guard_warmup < 0:
            raise _bad("mix_guard_warmup", f"must be an integer >= 0, got {self.mix_guard_warmup!r}")
        if self.mix_guard_margin is not None and not 0 < self.mix_guard_margin <= 1:
            raise _bad("mix_guard_margin", f"must be in (0, 1] or unset, got {self.mix_guard_margin!r}")
        for name in (
            "round_interval_s",
            "max_round_wait_s",
            "start_timeout_s",
            "discover_interval_s",
            "request_timeout_s",
            "join_timeout_s",
            "status_interval_s",
            "reconnect_interval_s",
            "roster_refresh_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or value < 0 or math.isnan(value):
                raise _bad(name, f"must be a number >= 0, got {value!r}")
        if self.metrics_listen is not None:
            from p2pfl.metrics.listen import parse_listen

            parse_listen(self.metrics_listen)
        if not self.roster_refresh_s > 0:
            raise _bad("roster_refresh_s", f"must be a number > 0, got {self.roster_refresh_s!r}")
        if self.roster is not None and self.open_network:
            raise _bad("open_network", "cannot be true when a roster is given (a roster closes the network)")
        if self.certificates and self.roster is None:
            raise _bad("certificates", "need a roster: certificates are verified under the roster's orgs")
        try:
            self.protocol()  # validates the protocol fields too
        except ConfigError as exc:
            raise _located(exc) from None

    def protocol(self) -> ProtocolConfig:
        """The engine's config: every ProtocolConfig field of the same name (``PROTOCOL_EXCLUDED`` aside)."""
        return derive(ProtocolConfig, self)


def derive(cls: type[T], src: Any, **extra: Any) -> T:
    """Build dataclass ``cls`` from ``src``'s attributes of the same names (plus ``extra``); a field
    ``src`` lacks keeps ``cls``'s own default."""
    kwargs = {
        f.name: getattr(src, f.name)
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.init and hasattr(src, f.name)
    }
    return cls(**{**kwargs, **extra})


# ------------------------------------------------------------------------------------ the key tables


@dataclass(frozen=True)
class TomlKey:
    """One TOML key of a peer config: where it is, which field it sets, which TOML types it accepts."""

    section: str
    key: str
    field: str
    kinds: tuple[type, ...]
    #: the declared type is float: an integer (TOML ``1``) becomes a float
    to_float: bool
    #: the declared type is a tuple/frozenset/Path: the loader converts the TOML list/string
    container: type | None


@functools.cache
def _type_hints(cls: Any) -> dict[str, Any]:
    """``cls``'s resolved field types, once per class: resolving them evaluates every string annotation
    (measured: 0.26 s per scenario parse, in each of a simulation's worker processes, when done per field)."""
    return typing.get_type_hints(cls)


def _field_type(cls: Any, name: str) -> Any:
    hint = _type_hints(cls)[name]
    if isinstance(hint, types.UnionType):  # X | None: TOML has no null, so the key accepts X
        (hint,) = (a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _toml_form(cls: Any, name: str) -> tuple[tuple[type, ...], bool, type | None]:
    hint = _field_type(cls, name)
    origin = typing.get_origin(hint)
    if origin in (tuple, frozenset):
        return (list,), False, origin
    if hint is Path:
        return (str,), False, Path
    if hint is float:
        return (int, float), True, None
    return (hint,), False, None


def toml_keys() -> dict[tuple[str, str], TomlKey]:
    """``(section, key) -> TomlKey`` for every PeerConfig field that has a TOML form."""
    out: dict[tuple[str, str], TomlKey] = {}
    for f in dataclasses.fields(PeerConfig):
        section = f.metadata["section"]
        if section is None:
            continue
        key = f.metadata["key"] or f.name
        kinds, to_float, container = _toml_form(PeerConfig, f.name)
        out[(section, key)] = TomlKey(section, key, f.name, kinds, to_float, container)
    return out


def sim_fields(section: str) -> dict[str, str]:
    """``scenario key -> PeerConfig field`` for the fields a scenario's ``[section]`` sets."""
    return {
        f.metadata["sim_key"] or f.name: f.name
        for f in dataclasses.fields(PeerConfig)
        if f.metadata["sim"] == section
    }


def check_kind(value: Any, kinds: tuple[type, ...], section: str, key: str) -> None:
    """``value`` must be one of ``kinds`` (a bool is no number); the error names ``[section] key``."""
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(t.__name__ for t in kinds)
        raise ConfigError(section, key, f"expected {names}, got {type(value).__name__} {value!r}")


def _section_of(name: str) -> tuple[str | None, str]:
    f = PeerConfig.__dataclass_fields__.get(name)
    if f is None:
        return None, name
    return f.metadata["section"], f.metadata["key"] or name


def _bad(name: str, reason: str) -> ConfigError:
    section, key = _section_of(name)
    return ConfigError(section, key, reason)


def _located(exc: ConfigError) -> ConfigError:
    """An engine config's error, re-raised under the PeerConfig key (and TOML section) that set it."""
    if exc.key is not None and exc.reason is not None:
        name, reason = exc.key, exc.reason
    else:
        head, sep, reason = str(exc).partition(": ")
        if not sep:
            return exc
        name = head.rpartition(".")[2]
    if name not in PeerConfig.__dataclass_fields__:
        return exc
    return _bad(name, reason)
