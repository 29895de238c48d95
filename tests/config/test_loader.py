"""Peer TOML configs: every mistake is reported with its key and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pfl.config import load_config
from p2pfl.errors import ConfigError
from p2pfl.identity import Identity

GOOD = """
[peer]
network_id = "digits"
key_file = "node.key"
state_dir = "state"
static_peers = ["/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"]
rounds = 5
local_steps = 7
max_round_wait_s = 3
[learner]
entry = "p2pfl.sim.entry:digits"
params = { peer_index = 0, num_peers = 2 }
[aggregation]
rule = "median"
[scoring]
enabled = true
evict_after = 5
[protocol]
max_staleness_s = 60
[access]
allow = ["12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB"]
open = true
"""


RSA_PEER = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"  # a valid libp2p id, but p2pfl needs Ed25519


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "peer.toml"
    path.write_text(text)
    return path


def test_a_complete_config_resolves_paths_and_values(tmp_path: Path) -> None:
    node = load_config(write(tmp_path, GOOD))
    assert (tmp_path / "node.key", tmp_path / "state") == (node.key_file, node.peer.state_dir)
    assert (5, 7, 3.0, "median", 5) == (
        node.rounds,
        node.peer.local_steps,
        node.peer.max_round_wait_s,
        node.peer.aggregation.rule,
        node.peer.scoring.evict_after,
    )
    assert frozenset({Identity(bytes(range(32))).peer_id}) == node.peer.allow
    assert 60.0 == node.peer.max_staleness_s
    learner = node.build_learner()
    assert "fc1.weight" in learner.get_params()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('network_id = "digits"', ""), r"\[peer\] network_id: required"),
        (("local_steps = 7", "local_stepz = 7"), r"\[peer\] local_stepz: unknown key"),
        (("local_steps = 7", 'local_steps = "7"'), r"\[peer\] local_steps: expected int"),
        (("local_steps = 7", "local_steps = 0"), r"local_steps: must be an integer >= 1"),
        (("rounds = 5", "rounds = -1"), r"\[peer\] rounds: must be >= 0"),
        (('rule = "median"', 'rule = "mode"'), r"\[aggregation\] rule: unknown rule"),
        (("evict_after = 5", "evict_after = 0"), r"\[scoring\] evict_after"),
        (("max_staleness_s = 60", "max_staleness = 60"), r"\[protocol\] max_staleness: unknown key"),
        (('allow = ["12D3', 'allow = ["QmNot'), r"\[access\] allow"),
        (
            ('entry = "p2pfl.sim.entry:digits"', 'entry = "nowhere"'),
            r"\[learner\] entry: expected 'module:function'",
        ),
        (
            ('entry = "p2pfl.sim.entry:digits"', 'entry = "no_such_mod:f"'),
            r"\[learner\] entry: cannot import",
        ),
        (("[access]", "[acess]"), r"\[acess\]: unknown section"),
        (('network_id = "digits"', 'network_id = "bad id!"'), r"network_id|net"),
        # addresses are checked when the config is loaded, not retried at INFO forever
        (
            ("/tcp/4001/p2p/12D3", "/tcp/x/p2p/12D3"),
            r"\[peer\] static_peers: '/ip4/127.0.0.1/tcp/x/p2p/.*' is not",
        ),
        (
            (
                "/tcp/4001/p2p/12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB",
                "/tcp/4001",
            ),
            r"\[peer\] static_peers: '/ip4/127.0.0.1/tcp/4001' must end in /p2p/<peer id>",
        ),
        (
            (
                "static_peers = [",
                f'bootstrap = ["/ip4/127.0.0.1/tcp/4001/p2p/{RSA_PEER}"]\nstatic_peers = [',
            ),
            r"\[peer\] bootstrap: .*not an Ed25519 peer id",
        ),
        (
            ("rounds = 5", 'rounds = 5\nlisten = "/ip4/127.0.0.1/tcp"'),
            r"\[peer\] listen: '/ip4/127.0.0.1/tcp' is not a multiaddr",
        ),
        # one key, one section
        (
            ("max_staleness_s = 60", "max_staleness_s = 60\nmin_neighbours = 2"),
            r"\[protocol\] min_neighbours: give it in \[peer\]",
        ),
        (
            ("max_staleness_s = 60", "max_staleness_s = 60\nstart_timeout_s = 9"),
            r"\[protocol\] start_timeout_s: give it in \[peer\]",
        ),
        # learner params are checked against the entry's signature
        (("num_peers = 2", 'num_peers = "2"'), r"\[learner.params\] num_peers: expected int, got str '2'"),
        (
            ("num_peers = 2", "num_peers = 2, lr = true"),
            r"\[learner.params\] lr: expected float, got bool True",
        ),
        (
            ("num_peers = 2", "num_peers = 2, learning_rate = 0.1"),
            r"\[learner.params\] learning_rate: unknown parameter of p2pfl.sim.entry:digits",
        ),
        (
            ("peer_index = 0, num_peers = 2", "peer_index = 0"),
            r"\[learner.params\] num_peers: required by p2pfl.sim.entry:digits",
        ),
        (
            ("num_peers = 2", "num_peers = 2, partition = 'nope'"),
            r"\[learner.params\]: p2pfl.sim.entry:digits refused them",
        ),
    ],
)
def test_every_mistake_names_its_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    assert change[0] in GOOD
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, GOOD.replace(change[0], change[1], 1))).build_learner()


def test_invalid_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[peer\n"))
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.toml")


def test_min_neighbours_in_peer_reaches_the_peer_config(tmp_path: Path) -> None:
    node = load_config(
        write(tmp_path, GOOD.replace("rounds = 5", "rounds = 5\nmin_neighbours = 3\nstart_timeout_s = 7"))
    )
    assert (3, 7.0) == (node.peer.min_neighbours, node.peer.start_timeout_s)


def test_an_old_simulations_entry_still_loads_with_a_deprecation_warning(tmp_path: Path) -> None:
    old = GOOD.replace('entry = "p2pfl.sim.entry:digits"', 'entry = "simulations.entry:digits"')
    with pytest.warns(DeprecationWarning, match="p2pfl.sim.entry"):
        learner = load_config(write(tmp_path, old)).build_learner()
    assert "fc1.weight" in learner.get_params()


def test_the_pacing_keys_of_protocol_reach_the_round_pacing(tmp_path: Path) -> None:
    from p2pfl.peer_rounds import pacing_config

    text = GOOD.replace("max_staleness_s = 60", "max_staleness_s = 60\nperiod_factor = 4\nmin_late_s = 1.5")
    pacing = pacing_config(load_config(write(tmp_path, text)).peer)
    assert (4.0, 2.0, 1.5) == (pacing.period_factor, pacing.work_factor, pacing.min_late_s)
    with pytest.raises(ConfigError, match="period_factor"):
        load_config(write(tmp_path, GOOD.replace("max_staleness_s = 60", "period_factor = 0")))


def test_the_rates_section_reaches_the_engine_s_token_buckets(tmp_path: Path) -> None:
    text = GOOD + "\n[rates]\nsender_rate = 5\nrelay_burst = 50\n"
    node = load_config(write(tmp_path, text))
    assert (5.0, 50.0, 60.0) == (
        node.peer.rates.sender_rate,
        node.peer.rates.relay_burst,
        node.peer.rates.sender_burst,
    )
    with pytest.raises(ConfigError, match=r"\[rates\] sender_rate: must be a positive number"):
        load_config(write(tmp_path, GOOD + "\n[rates]\nsender_rate = 0\n"))
    with pytest.raises(ConfigError, match=r"\[rates\] sender_rat: unknown key"):
        load_config(write(tmp_path, GOOD + "\n[rates]\nsender_rat = 1\n"))
