"""The one schema: engine configs derive from PeerConfig, TOML keys come from its fields, errors name
``[section] key``, and the TOML loader and the simulation agree on every knob they share."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path
from typing import Any

import pytest

from p2pfl.config import PeerConfig, derive, parse_config
from p2pfl.config.schema import PROTOCOL_EXCLUDED, default_of, sim_fields, toml_keys
from p2pfl.errors import ConfigError
from p2pfl.protocol import ProtocolConfig
from p2pfl.sim.runner import peer_config
from p2pfl.sim.scenario import RUN_DEFAULTS, SIM_PEER_SETTINGS, ScenarioError, parse_scenario

PEER_FIELDS = {f.name for f in dataclasses.fields(PeerConfig)}
SCHEMA = toml_keys()
MINIMAL: dict[str, dict[str, Any]] = {
    "peer": {"network_id": "n", "key_file": "k"},
    "learner": {"entry": "m:f"},
    "access": {"open": True},  # `p2pfl peer` needs a roster or an explicit open network
}


def doc(**sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {s: dict(t) for s, t in MINIMAL.items()}
    for section, table in sections.items():
        out.setdefault(section, {}).update(table)
    return out


def test_every_protocol_field_is_derived_or_excluded_with_a_reason() -> None:
    protocol_fields = {f.name for f in dataclasses.fields(ProtocolConfig)}
    assert set(PROTOCOL_EXCLUDED) <= protocol_fields - PEER_FIELDS
    assert protocol_fields - PEER_FIELDS == set(PROTOCOL_EXCLUDED)
    assert all(PROTOCOL_EXCLUDED.values())


def test_derived_fields_carry_their_values_and_share_one_default() -> None:
    derived = {f.name for f in dataclasses.fields(ProtocolConfig)} & PEER_FIELDS
    assert {"network_id", "inline_limit", "codec", "join_quorum", "readmit_after_s"} <= derived
    changed = PeerConfig(
        network_id="other",
        inline_limit=1234,
        max_staleness_s=7.0,
        max_delta_norm=3.0,
        codec="fp16",
        join_quorum=3,
        readmit_after_s=60.0,
    )
    proto = changed.protocol()
    for name in derived:
        assert getattr(proto, name) == getattr(changed, name), name
        if name != "network_id":
            assert default_of(PeerConfig, name) == default_of(ProtocolConfig, name), name
    assert proto.payload_cache == default_of(ProtocolConfig, "payload_cache")


def test_derive_keeps_the_target_default_for_what_the_source_lacks() -> None:
    @dataclasses.dataclass
    class Src:
        network_id: str = "x"
        codec: str = "fp16"

    out = derive(ProtocolConfig, Src(), join_quorum=5)
    assert (out.network_id, out.codec, out.join_quorum) == ("x", "fp16", 5)
    assert out.inline_limit == default_of(ProtocolConfig, "inline_limit")


def test_every_toml_key_maps_to_exactly_one_field_and_one_section() -> None:
    fields = [spec.field for spec in SCHEMA.values()]
    assert len(fields) == len(set(fields))
    keys = [key for (_, key) in SCHEMA]
    # one name in two sections: [peer] listen (libp2p) and [metrics] listen (the Prometheus endpoint)
    assert {k for k in keys if keys.count(k) > 1} == {"listen"}, "a key name in two sections"
    assert set(fields) <= PEER_FIELDS
    untomled = PEER_FIELDS - set(fields)
    # set as sections of their own ([aggregation], [scoring] thresholds, [rollout], [rates], [secagg],
    # [privacy]) or by code only
    assert untomled == {
        "aggregation",
        "scoring",
        "reconnect_interval_s",
        "rollout",
        "rates",
        "secagg",
        "privacy",
    }


@pytest.mark.parametrize(("section", "key"), sorted(SCHEMA))
def test_a_key_in_another_section_names_where_it_belongs(section: str, key: str) -> None:
    for other in ("peer", "protocol", "scoring", "access", "metrics"):
        if other == section or (other, key) in SCHEMA:
            continue
        with pytest.raises(ConfigError, match=rf"^\[{other}\] {key}: give it in .*\[{section}\]") as info:
            parse_config(doc(**{other: {key: 1}}), Path("."))
        assert (info.value.section, info.value.key) == (other, key)


@pytest.mark.parametrize(("section", "key"), sorted(SCHEMA))
def test_a_mistyped_key_names_section_and_key(section: str, key: str) -> None:
    kinds = SCHEMA[(section, key)].kinds
    wrong = next(v for v in ("x", 1.5, True, ["x"]) if not isinstance(v, kinds) or isinstance(v, bool))
    if isinstance(wrong, bool) and bool in kinds:
        wrong = "x"
    with pytest.raises(ConfigError, match=rf"^\[{section}\] {key}: expected "):
        parse_config(doc(**{section: {key: wrong}}), Path("."))


def test_integers_become_floats_by_declared_type() -> None:
    hints = typing.get_type_hints(PeerConfig)
    floats = [spec for spec in SCHEMA.values() if spec.to_float]
    tomled = {s.field for s in SCHEMA.values()}
    assert {s.field for s in floats} == {n for n in tomled if hints[n] in (float, float | None)}
    values = {"max_delta_norm": 3, "rollback_margin": 1, "mix_guard_margin": 1, "wait_fraction": 1}
    values["max_version_age_s"] = 3  # must exceed max_clock_skew_s (2)
    by_section: dict[str, dict[str, Any]] = {}
    for spec in floats:
        by_section.setdefault(spec.section, {})[spec.key] = values.get(spec.key, 2)
    by_section["protocol"]["rollback_margin"] = 0.5  # (0, 1) is its range; an int cannot be in it
    peer = parse_config(doc(**by_section), Path(".")).peer
    for spec in floats:
        value = getattr(peer, spec.field)
        assert type(value) is float, spec.field


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"peer": {"local_steps": 0}}, r"^\[peer\] local_steps: must be an integer >= 1"),
        ({"peer": {"network_id": "bad id!"}}, r"^\[peer\] network_id: must be 1-64"),
        ({"protocol": {"inline_limit": -1}}, r"^\[protocol\] inline_limit: must be an integer >= 0"),
        ({"protocol": {"codec": "zip"}}, r"^\[protocol\] codec: must be 'raw', 'fp16', 'int8' or 'topk"),
        ({"protocol": {"mix_guard_margin": 2}}, r"^\[protocol\] mix_guard_margin: must be in \(0, 1\]"),
        ({"scoring": {"evict_after": 0}}, r"^\[scoring\] evict_after: must be an integer >= 1"),
        ({"scoring": {"enabled": 1}}, r"^\[scoring\] enabled: expected bool"),
        ({"peer": {"inbound_rate": 0}}, r"^\[peer\] inbound_rate: must be a positive number"),
        ({"peer": {"inbound_handshakes": 0}}, r"^\[peer\] inbound_handshakes: must be an integer in 1"),
    ],
)
def test_range_errors_name_section_and_key(table: dict[str, dict[str, Any]], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(doc(**table), Path("."))


def test_config_error_forms() -> None:
    err = ConfigError("protocol", "codec", "must be 'raw' or 'fp16'")
    assert str(err) == "[protocol] codec: must be 'raw' or 'fp16'"
    assert (err.section, err.key, err.reason) == ("protocol", "codec", "must be 'raw' or 'fp16'")
    assert str(ConfigError(None, "reconnect_interval_s", "bad")) == "reconnect_interval_s: bad"
    plain = ConfigError("cannot read config x")
    assert (str(plain), plain.section, plain.key) == ("cannot read config x", None, None)
    assert issubclass(ScenarioError, ConfigError)


def test_scenario_sections_hold_the_fields_the_schema_gives_them() -> None:
    run = {f.name for f in dataclasses.fields(parse_scenario({}).run)}
    scoring = {f.name for f in dataclasses.fields(parse_scenario({}).scoring)}
    assert (
        set(sim_fields("run"))
        == {
            "wait_fraction",
            "wait_before_mix",
            "mix_steps",
            "rotate_every",
            "rotate_degree",
            "rotate_cooldown",
            "mix_scope",
            "max_round_wait_s",
            "network_id",
            "codec",
        }
        <= run
    )
    assert set(sim_fields("scoring")) == {"enabled", "val_scoring", "mix_guard"} <= scoring


def test_the_loader_and_the_simulation_agree() -> None:
    sim = parse_scenario(
        {
            "run": {
                "wait_fraction": 0.5,
                "wait_before_mix": True,
                "max_round_wait_s": 3,
                "network_id": "net-1",
            },
            "scoring": {"enabled": False, "val_scoring": False, "mix_guard": 0.25},
        }
    )
    from_sim = peer_config(sim, state_dir=None)
    from_toml = parse_config(
        doc(
            peer={
                "network_id": "net-1",
                "wait_fraction": 0.5,
                "wait_before_mix": True,
                "max_round_wait_s": 3,
            },
            scoring={"enabled": False, "val_scoring": False},
            protocol={"mix_guard_margin": 0.25},
        ),
        Path("."),
    ).peer
    for section in ("run", "scoring"):
        for name in sim_fields(section).values():
            assert getattr(from_sim, name) == getattr(from_toml, name), name
    assert type(from_sim.max_round_wait_s) is float


def test_a_default_scenario_changes_only_the_declared_sim_settings() -> None:
    sc = parse_scenario({})
    got = peer_config(sc, state_dir=None)
    declared = {
        "network_id": RUN_DEFAULTS["network_id"],
        "max_round_wait_s": RUN_DEFAULTS["max_round_wait_s"],
        **SIM_PEER_SETTINGS,
        "local_steps": sc.model.local_steps,
        "aggregation": sc.aggregation.config(),
        "scoring": sc.scoring.config(),
        "status_interval_s": 0.0,
    }
    expected = dataclasses.replace(PeerConfig(network_id="x"), **declared)
    assert got == expected
    assert got.max_round_wait_s == 5.0 and not math.isclose(got.max_round_wait_s, 10.0)


def test_scenario_range_errors_use_the_scenario_key() -> None:
    with pytest.raises(ScenarioError, match=r"^\[scoring\] mix_guard: must be in \(0, 1\]"):
        parse_scenario({"scoring": {"mix_guard": 2}})
    with pytest.raises(ScenarioError, match=r"^\[run\] wait_fraction: must be in \[0, 1\]"):
        parse_scenario({"run": {"wait_fraction": 2}})
