"""TOML configuration of a peer node, validated key by key (``ConfigError`` names the key and the reason).

See ``docs/peer.md`` for a complete, commented example. Relative paths are resolved against the directory
of the config file, so a config and its key/state can move together.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import tomllib
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pfl.aggregation import AggregationConfig
from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.identity import public_key_from_peer_id
from p2pfl.learner import Learner
from p2pfl.peer import PeerConfig
from p2pfl.scoring import ScoringConfig

_PEER_KEYS = {
    "network_id": str,
    "key_file": str,
    "listen": str,
    "state_dir": str,
    "static_peers": list,
    "bootstrap": list,
    "log_level": str,
    "rounds": int,
    "local_steps": int,
    "round_interval_s": (int, float),
    "status_interval_s": (int, float),
    "request_timeout_s": (int, float),
    "wait_fraction": (int, float),
    "max_round_wait_s": (int, float),
    "min_neighbours": int,
    "start_timeout_s": (int, float),
    "max_neighbours": int,
    "discover_interval_s": (int, float),
    "bootstrap_ttl": int,
    "advertise": list,
}
#: [peer] keys handed to PeerConfig as they are (after int -> float for the float knobs)
_PEER_PASSTHROUGH = (
    "wait_fraction",
    "max_round_wait_s",
    "min_neighbours",
    "start_timeout_s",
    "max_neighbours",
    "discover_interval_s",
    "bootstrap_ttl",
)
_PROTOCOL_KEYS = {
    "inline_limit": int,
    "max_staleness_s": (int, float),
    "max_delta_norm": (int, float),
    "codec": str,
    "mix_scope": str,
    "join_on_start": bool,
    "join_quorum": int,
    "join_timeout_s": (int, float),
    "rollback_margin": (int, float),
    "rollback_warmup": int,
    "mix_guard_margin": (int, float),
    "mix_guard_warmup": int,
    "max_model_bytes": int,
    "readmit_after_s": (int, float),
}
_SECTIONS = ("peer", "learner", "aggregation", "scoring", "protocol", "access")
#: keys that used to be accepted in [protocol] too; each is accepted in [peer] only now (one value, one place)
_PEER_ONLY = ("min_neighbours", "start_timeout_s")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class NodeConfig:
    """A resolved node config: the peer's config plus what the CLI needs around it."""

    peer: PeerConfig
    key_file: Path
    learner_entry: str
    learner_params: dict[str, Any]
    rounds: int | None
    log_level: str
    source: Path

    def build_learner(self) -> Learner:
        """Call the entry with the params; a refusal is a ``ConfigError`` naming ``[learner.params]``."""
        fn = load_entry(self.learner_entry)
        check_learner_params(fn, self.learner_params, self.learner_entry)
        try:
            return fn(**self.learner_params)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"[learner.params]: {self.learner_entry} refused them: {exc}") from None


_SIMPLE_TYPES: dict[Any, tuple[type, ...]] = {
    int: (int,),
    float: (int, float),
    str: (str,),
    bool: (bool,),
    "int": (int,),
    "float": (int, float),
    "str": (str,),
    "bool": (bool,),
}


def check_learner_params(fn: Callable[..., Any], params: Mapping[str, Any], entry: str) -> None:
    """Check ``params`` against the entry's signature before calling it: unknown, missing and mistyped
    (for ``int``/``float``/``str``/``bool`` annotations) keys are ``ConfigError``s naming the key."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin or C callable: nothing to check against
    accepted = {
        name: p
        for name, p in sig.parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    for key in params:
        if key not in accepted and not open_ended:
            known = ", ".join(sorted(accepted)) or "none"
            raise ConfigError(f"[learner.params] {key}: unknown parameter of {entry}; known: {known}")
    for name, p in accepted.items():
        if p.default is inspect.Parameter.empty and name not in params:
            raise ConfigError(f"[learner.params] {name}: required by {entry}")
    for key, value in params.items():
        if key not in accepted:
            continue
        kinds = _SIMPLE_TYPES.get(accepted[key].annotation)
        if kinds is None:
            continue
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise ConfigError(
                f"[learner.params] {key}: expected {kinds[-1].__name__}, got {type(value).__name__} {value!r}"
            )


def _check(table: Mapping[str, Any], allowed: Mapping[str, Any], section: str) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise ConfigError(f"[{section}] {key}: unknown key; known keys: {', '.join(sorted(allowed))}")
        expected = allowed[key]
        if expected is not None and (
            not isinstance(value, expected) or (isinstance(value, bool) and expected in (int, (int, float)))
        ):
            names = (
                expected.__name__ if isinstance(expected, type) else " or ".join(t.__name__ for t in expected)
            )
            raise ConfigError(f"[{section}] {key}: expected {names}, got {type(value).__name__} {value!r}")


def _dataclass_section(cls: Any, table: Mapping[str, Any], section: str, renames: Mapping[str, str]) -> Any:
    names = {f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        field_name = renames.get(key, key).replace("-", "_")
        if field_name not in names:
            raise ConfigError(f"[{section}] {key}: unknown key; known keys: {', '.join(sorted(names))}")
        kwargs[field_name] = value
    try:
        return cls(**kwargs)
    except P2PFLError as exc:
        raise ConfigError(f"[{section}] {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"[{section}] {exc}") from None


def load_entry(entry: str) -> Callable[..., Learner]:
    """Import ``module:function``; the function builds the learner (and its private data)."""
    module_name, sep, attr = entry.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"[learner] entry: expected 'module:function', got {entry!r}")
    if module_name == "simulations" or module_name.startswith("simulations."):
        new = "p2pfl.sim" + module_name.removeprefix("simulations")
        warnings.warn(
            f"[learner] entry: {module_name!r} is now {new!r} (the simulations folder installs as p2pfl.sim)",
            DeprecationWarning,
            stacklevel=2,
        )
        module_name = new
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"[learner] entry: cannot import module {module_name!r}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"[learner] entry: {module_name!r} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]


def check_multiaddr(addr: str, where: str, *, with_peer_id: bool) -> None:
    """``addr`` must parse as a multiaddr and, ``with_peer_id``, end in ``/p2p/<Ed25519 peer id>``."""
    import multiaddr  # libp2p's own parser, so what passes here dials there

    try:
        parsed = multiaddr.Multiaddr(addr)
    except Exception as exc:  # the package's errors share no base class beyond Exception
        raise ConfigError(f"{where}: {addr!r} is not a multiaddr: {_first_line(exc)}") from None
    if not with_peer_id:
        return
    names = [p.name for p in parsed.protocols()]
    if names.count("p2p") != 1 or names[-1] != "p2p":
        raise ConfigError(f"{where}: {addr!r} must end in /p2p/<peer id> (the peer to expect there)")
    try:
        public_key_from_peer_id(parsed.value_for_protocol("p2p"))
    except P2PFLError as exc:
        raise ConfigError(f"{where}: {addr!r}: {exc}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).splitlines()
    return lines[0] if lines else type(exc).__name__


def _path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def parse_config(data: Mapping[str, Any], base: Path, source: Path | None = None) -> NodeConfig:
    for section in data:
        if section not in _SECTIONS:
            raise ConfigError(f"[{section}]: unknown section; known sections: {', '.join(_SECTIONS)}")
        if not isinstance(data[section], dict):
            raise ConfigError(f"[{section}]: must be a table")
    peer = data.get("peer", {})
    _check(peer, _PEER_KEYS, "peer")
    for key in ("network_id", "key_file"):
        if key not in peer:
            raise ConfigError(f"[peer] {key}: required")
    for key in ("static_peers", "bootstrap", "advertise"):
        if not all(isinstance(a, str) for a in peer.get(key, [])):
            raise ConfigError(f"[peer] {key}: must be a list of multiaddr strings")
        for addr in peer.get(key, []):
            check_multiaddr(addr, f"[peer] {key}", with_peer_id=key != "advertise")
    if "listen" in peer:
        check_multiaddr(peer["listen"], "[peer] listen", with_peer_id=False)
    log_level = peer.get("log_level", "info")
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"[peer] log_level: must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    rounds = peer.get("rounds", 0)
    if rounds < 0:
        raise ConfigError(f"[peer] rounds: must be >= 0 (0 runs until stopped), got {rounds}")

    learner = data.get("learner", {})
    _check(learner, {"entry": str, "params": dict}, "learner")
    if "entry" not in learner:
        raise ConfigError("[learner] entry: required ('module:function' returning a p2pfl Learner)")

    aggregation = _dataclass_section(AggregationConfig, data.get("aggregation", {}), "aggregation", {})
    scoring_table = dict(data.get("scoring", {}))
    scoring_enabled = scoring_table.pop("enabled", True)
    val_scoring = scoring_table.pop("val_scoring", True)
    if not isinstance(scoring_enabled, bool) or not isinstance(val_scoring, bool):
        raise ConfigError("[scoring] enabled/val_scoring: must be true or false")
    scoring = _dataclass_section(ScoringConfig, scoring_table, "scoring", {})

    protocol = data.get("protocol", {})
    for key in _PEER_ONLY:
        if key in protocol:
            raise ConfigError(f"[protocol] {key}: give it in [peer] (a key is accepted in one section only)")
    _check(protocol, _PROTOCOL_KEYS, "protocol")
    access = data.get("access", {})
    _check(access, {"allow": list}, "access")
    allow: frozenset[str] | None = None
    if "allow" in access:
        for pid in access["allow"]:
            try:
                public_key_from_peer_id(pid)
            except P2PFLError as exc:
                raise ConfigError(f"[access] allow: {exc}") from None
        allow = frozenset(access["allow"])

    try:
        peer_config = PeerConfig(
            network_id=peer["network_id"],
            listen=peer.get("listen", "/ip4/127.0.0.1/tcp/0"),
            static_peers=tuple(peer.get("static_peers", ())),
            bootstrap=tuple(peer.get("bootstrap", ())),
            advertise=tuple(peer.get("advertise", ())),
            state_dir=_path(base, peer["state_dir"]) if "state_dir" in peer else None,
            local_steps=peer.get("local_steps", 20),
            round_interval_s=float(peer.get("round_interval_s", 0.0)),
            status_interval_s=float(peer.get("status_interval_s", 10.0)),
            request_timeout_s=float(peer.get("request_timeout_s", 30.0)),
            aggregation=aggregation,
            scoring=scoring,
            scoring_enabled=scoring_enabled,
            val_scoring=val_scoring,
            allow=allow,
            **_protocol_kwargs(protocol),
            **_protocol_kwargs({k: peer[k] for k in _PEER_PASSTHROUGH if k in peer}),
        )
    except P2PFLError as exc:
        raise ConfigError(f"[peer/protocol] {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"[peer/protocol] {exc}") from None
    return NodeConfig(
        peer=peer_config,
        key_file=_path(base, peer["key_file"]),
        learner_entry=learner["entry"],
        learner_params=dict(learner.get("params", {})),
        rounds=rounds or None,
        log_level=log_level,
        source=source or base,
    )


def _protocol_kwargs(protocol: Mapping[str, Any]) -> dict[str, Any]:
    """Integers given for float knobs become floats (TOML has ``1`` and ``1.0``; both mean the same here)."""
    out: dict[str, Any] = {}
    for key, value in protocol.items():
        is_float_knob = key.endswith(("_s", "_norm", "_margin", "_fraction"))
        out[key] = float(value) if is_float_knob and not isinstance(value, bool) else value
    return out


def read_toml(
    path: str | Path, what: str = "config", error: type[ConfigError] = ConfigError
) -> dict[str, Any]:
    """Parse a TOML file; unreadable or invalid files raise ``error`` saying which and why."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{p}: not valid TOML: {exc}") from None


def load_config(path: str | Path) -> NodeConfig:
    """Read and validate a peer TOML file."""
    p = Path(path)
    data = read_toml(p)
    return parse_config(data, p.resolve().parent, p)
