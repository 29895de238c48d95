"""TOML configuration of a peer node, validated key by key (``ConfigError`` names ``[section] key``).

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
from p2pfl.config.schema import PeerConfig, TomlKey, check_kind, toml_keys
from p2pfl.errors import ConfigError, P2PFLError
from p2pfl.identity import public_key_from_peer_id
from p2pfl.learner import Learner
from p2pfl.privacy.config import PrivacyConfig
from p2pfl.protocol.ratelimit import RateConfig
from p2pfl.rollout.config import RolloutConfig
from p2pfl.scoring import ScoringConfig
from p2pfl.secagg.config import SecAggConfig

#: [peer] keys of the node around the peer (the CLI's), not of PeerConfig
NODE_KEYS: dict[str, tuple[type, ...]] = {"key_file": (str,), "log_level": (str,), "rounds": (int,)}
#: the [learner] section
_LEARNER_KEYS: dict[str, tuple[type, ...]] = {"entry": (str,), "params": (dict,)}
_SECTIONS = (
    "peer",
    "learner",
    "aggregation",
    "scoring",
    "protocol",
    "access",
    "metrics",
    "rollout",
    "rates",
    "secagg",
    "privacy",
)
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
        except ConfigError as exc:
            if exc.section == "learner.params":
                raise
            raise ConfigError(f"[learner.params]: {self.learner_entry} refused them: {exc}") from None
        except (TypeError, ValueError, P2PFLError) as exc:
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
    except ConfigError as exc:
        if exc.section == section:
            raise
        raise ConfigError(f"[{section}] {exc}") from None
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
    """Validate a parsed peer TOML document; every error is a ``ConfigError`` naming ``[section] key``."""
    for section in data:
        if section not in _SECTIONS:
            raise ConfigError(f"[{section}]: unknown section; known sections: {', '.join(_SECTIONS)}")
        if not isinstance(data[section], dict):
            raise ConfigError(f"[{section}]: must be a table")
    schema = toml_keys()
    fields: dict[str, Any] = {}
    node: dict[str, Any] = {}
    scoring_params: dict[str, Any] = {}
    scoring_names = {f.name for f in dataclasses.fields(ScoringConfig)}
    for section in ("peer", "protocol", "scoring", "access", "metrics"):
        for key, value in data.get(section, {}).items():
            spec = schema.get((section, key))
            if spec is not None:
                check_kind(value, spec.kinds, section, key)
                fields[spec.field] = _convert(spec, value, base)
            elif section == "peer" and key in NODE_KEYS:
                check_kind(value, NODE_KEYS[key], section, key)
                node[key] = value
            elif section == "scoring" and key in scoring_names:
                scoring_params[key] = value  # validated by ScoringConfig below
            else:
                _misplaced_or_unknown(schema, section, key, scoring_names)
    peer = data.get("peer", {})
    for key in ("network_id", "key_file"):
        if key not in peer:
            raise ConfigError("peer", key, "required")
    for key in ("static_peers", "bootstrap", "advertise"):
        for addr in peer.get(key, []):
            check_multiaddr(addr, f"[peer] {key}", with_peer_id=key != "advertise")
    if "listen" in peer:
        check_multiaddr(peer["listen"], "[peer] listen", with_peer_id=False)
    log_level = node.get("log_level", "info")
    if log_level not in LOG_LEVELS:
        raise ConfigError("peer", "log_level", f"must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    rounds = node.get("rounds", 0)
    if rounds < 0:
        raise ConfigError("peer", "rounds", f"must be >= 0 (0 runs until stopped), got {rounds}")
    if "certificates" in fields:
        fields["certificates"] = tuple(_path(base, c) for c in fields["certificates"])
    for pid in fields.get("allow", ()):
        try:
            public_key_from_peer_id(pid)
        except P2PFLError as exc:
            raise ConfigError("access", "allow", str(exc)) from None

    learner = data.get("learner", {})
    for key, value in learner.items():
        if key not in _LEARNER_KEYS:
            raise ConfigError("learner", key, f"unknown key; known keys: {', '.join(sorted(_LEARNER_KEYS))}")
        check_kind(value, _LEARNER_KEYS[key], "learner", key)
    if "entry" not in learner:
        raise ConfigError("learner", "entry", "required ('module:function' returning a p2pfl Learner)")

    fields["aggregation"] = _dataclass_section(
        AggregationConfig, data.get("aggregation", {}), "aggregation", {}
    )
    fields["scoring"] = _dataclass_section(ScoringConfig, scoring_params, "scoring", {})
    fields["rollout"] = _dataclass_section(RolloutConfig, data.get("rollout", {}), "rollout", {})
    fields["rates"] = _dataclass_section(RateConfig, data.get("rates", {}), "rates", {})
    fields["secagg"] = _dataclass_section(SecAggConfig, data.get("secagg", {}), "secagg", {})
    fields["privacy"] = _dataclass_section(PrivacyConfig, data.get("privacy", {}), "privacy", {})
    peer_config = PeerConfig(**fields)  # its errors name [section] key (p2pfl.config.schema)
    if peer_config.roster is None and peer_config.open_network is not True:
        raise ConfigError(
            "access",
            "roster",
            "required: a peer joins a closed network with its signed roster (docs/membership.md); "
            "set [access] open = true to run an open network",
        )
    return NodeConfig(
        peer=peer_config,
        key_file=_path(base, peer["key_file"]),
        learner_entry=learner["entry"],
        learner_params=dict(learner.get("params", {})),
        rounds=rounds or None,
        log_level=log_level,
        source=source or base,
    )


def _convert(spec: TomlKey, value: Any, base: Path) -> Any:
    """A checked TOML value in its field's type: int -> float, list -> tuple/frozenset, str -> Path."""
    if spec.container in (tuple, frozenset):
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(spec.section, spec.key, "must be a list of strings")
        return spec.container(value)
    if spec.container is Path:
        return _path(base, value)
    return float(value) if spec.to_float else value


def _misplaced_or_unknown(
    schema: Mapping[tuple[str, str], TomlKey], section: str, key: str, scoring_names: set[str]
) -> None:
    """A key the section does not hold: name the section that does, or list the section's keys."""
    homes = sorted({s for (s, k) in schema if k == key} | ({"scoring"} if key in scoring_names else set()))
    if homes:
        where = " or ".join(f"[{h}]" for h in homes)
        raise ConfigError(section, key, f"give it in {where} (a key is accepted in its own section only)")
    known = sorted(
        {k for (s, k) in schema if s == section}
        | (set(NODE_KEYS) if section == "peer" else set())
        | (scoring_names if section == "scoring" else set())
    )
    raise ConfigError(section, key, f"unknown key; known keys: {', '.join(known)}")


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
