"""Run a scenario: many real :class:`p2pfl.peer.Peer` objects on one machine.

Two engines share everything but the transport and the process layout:

* ``memory``: every peer in one trio loop over :class:`p2pfl.transport.memory.MemoryNetwork` (``flood=False``:
  a broadcast reaches the direct neighbours only, like gossip restricted to the topology; ``[run] relay``:
  receivers relay to the origin's other neighbours, as gossipsub does).
* ``libp2p``: one OS process per peer (``python -m p2pfl.sim.worker``), real libp2p on 127.0.0.1, each peer
  dialling only its topology neighbours. Workers report through files in ``DIR/peers/<i>/`` (``status.json``
  and the checkpoint written by the peer itself, ``result.json`` and ``vectors.npy`` written by the worker);
  the parent evaluates every final checkpoint on the global test set.

Each peer is driven by :class:`~p2pfl.sim.peer_runner.PeerRunner` (re-exported here), the same in both
engines.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import trio

import p2pfl
from p2pfl.errors import ConfigError, P2PFLError

from .data import Split
from .peer_runner import FINAL_CHECKPOINT, VECTOR_SAMPLE, PeerRunner  # noqa: F401 - re-exported
from .plan import (  # noqa: F401 - re-exported: the plan lived here
    PeerPlan,
    Plan,
    build_learner,
    flat,
    load_split,
    load_splits,
    make_plan,
    peer_config,
    save_splits,
    total_peers,
)
from .progress import Progress, _isatty  # noqa: F401 - re-exported
from .scenario import Scenario

#: The directory ``p2pfl`` is imported from (a checkout or site-packages): each worker gets it first on its
#: PYTHONPATH, so it runs the same code as this process.
IMPORT_ROOT = Path(p2pfl.__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------------- output


@dataclass
class RunOutput:
    plan: Plan
    peers: list[dict[str, Any]]
    vectors: dict[int, npt.NDArray[np.float32]]  # honest peer index -> (rounds, d) own models
    wall_s: float
    timed_out: bool
    #: the [secagg] group's summary (p2pfl.sim.secagg_sim.SecAggHub.summary), when the scenario has one
    secagg: dict[str, Any] | None = None


async def run_memory(
    scenario: Scenario, out: Path, *, quiet: bool = False, splits: list[Split] | None = None
) -> RunOutput:
    """Every peer in one trio loop (:func:`p2pfl.sim.engine_memory.run_memory`; kept here for callers)."""
    from .engine_memory import run_memory as run

    return await run(scenario, out, quiet=quiet, splits=splits)


# --------------------------------------------------------------------------------------------- API


def run_scenario(
    scenario: Scenario, out: Path, *, quiet: bool = False, plots: bool = True, reproducible: bool = False
) -> dict[str, Any]:
    """Run ``scenario``, write ``out/results.json``, ``out/report.md`` and the plots; return the results.
    ``reproducible``: on a simulated clock (memory engine only; p2pfl.sim.determinism). Raises
    :class:`~p2pfl.errors.ConfigError` (before writing anything) when ``reproducible`` is asked of a scenario
    on another engine: the simulated clock cannot drive real sockets, and running it on the memory engine
    instead would silently measure a different system."""
    if reproducible and scenario.run.transport != "memory":
        raise ConfigError("run", "transport", 'a reproducible run (--reproducible) needs "memory"')
    from .attack_metrics import attack_metrics
    from .engine_libp2p import run_libp2p
    from .report import write_outputs

    out.mkdir(parents=True, exist_ok=True)
    # the peers' own log lines (evictions, rejections) go to a file, not over the progress bar
    handler = logging.FileHandler(out / "peers.log", mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    p2pfl_log = logging.getLogger("p2pfl")
    p2pfl_log.addHandler(handler)
    propagate, p2pfl_log.propagate = p2pfl_log.propagate, False
    try:
        if reproducible:
            from .determinism import run_reproducible

            output = run_reproducible(scenario, out, quiet=quiet)
        elif scenario.run.transport == "memory":
            output = trio.run(lambda: run_memory(scenario, out, quiet=quiet))
        else:
            output = run_libp2p(scenario, out, quiet=quiet)
    finally:
        p2pfl_log.removeHandler(handler)
        p2pfl_log.propagate = propagate
        handler.close()
    results = write_outputs(output, out, plots=plots)
    # issue 15's figures (mixing shares, bans by reason and round, seconds per round) ride along
    results["attacks"] = attack_metrics(output)
    if output.secagg is not None:
        results["secagg"] = output.secagg
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return results


def run_cli(scenario_path: str, out: Path, *, quiet: bool = False, reproducible: bool = False) -> int:
    """``p2pfl sim SCENARIO --out DIR [--reproducible]``: run, print the headline numbers, exit 0 (1 on a bad
    scenario)."""
    from .scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(scenario_path)
    except (ScenarioError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        results = run_scenario(scenario, out, quiet=quiet, reproducible=reproducible)
    except (ImportError, P2PFLError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    acc = results["honest_accuracy"]
    ev = results["evictions"]
    print(
        f"{scenario.name}: {results['wall_s']:.1f} s, honest accuracy mean {acc['mean']} min {acc['min']}, "
        f"evictions {ev['true_positive']}/{ev['expected']} (false positives {ev['false_positive']}); "
        f"report: {out / 'report.md'}"
    )
    if results["timed_out"]:
        print("error: the scenario hit its [run] time_limit_s", file=sys.stderr)
        return 1
    return 0
