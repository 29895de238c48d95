"""A real peer (memory transport, scripted model quality) rolls versions out: shadow, canary, promotion,
demotion, signed records that `p2pfl audit verify` accepts, restart, manual promote/rollback, feedback."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trio

from p2pfl.cli import main as cli_main
from p2pfl.identity import Identity, save_key
from p2pfl.learner import EvalResult, TrainResult
from p2pfl.peer import Peer, PeerConfig
from p2pfl.protocol import Replica
from p2pfl.rollout import FeedbackError, RolloutConfig
from p2pfl.rollout.policy import DEMOTE, PROMOTE
from p2pfl.state import read_log, verify_log
from p2pfl.transport.memory import MemoryNetwork

N_VAL = 200


class QualityLearner:
    """Two classes; a model is one number w in [0, 1]: its score mixes the true label (weight w) with fixed
    noise, so a larger w is a better model (AUC and F1 grow with it). Training yields a scripted w."""

    def __init__(self, trained: list[float]) -> None:
        self.trained = list(trained)
        self.params: dict[str, npt.NDArray[np.float32]] = {"w": np.zeros(1, np.float32)}
        rng = np.random.default_rng(7)
        self.y = rng.integers(0, 2, N_VAL).astype(np.int64)
        self.x = np.stack([self.y.astype(np.float32), rng.random(N_VAL).astype(np.float32)], axis=1)

    def get_params(self) -> dict[str, npt.NDArray[np.float32]]:
        return {k: v.copy() for k, v in self.params.items()}

    def set_params(self, params: Mapping[str, npt.NDArray[Any]]) -> None:
        self.params = {k: np.array(v, np.float32) for k, v in params.items()}

    def train(self, steps: int) -> TrainResult:
        self.params = {"w": np.full(1, self.trained.pop(0), np.float32)}
        return TrainResult(loss=0.5, samples=10, steps=steps)

    def predict_proba(
        self, x: npt.NDArray[Any], params: Mapping[str, npt.NDArray[Any]] | None = None
    ) -> npt.NDArray[np.float32]:
        w = float((params if params is not None else self.params)["w"][0])
        x = np.asarray(x, np.float32)
        p1 = np.clip(w * x[:, 0] + (1 - w) * x[:, 1], 0.0, 1.0)
        return np.stack([1 - p1, p1], axis=1).astype(np.float32)

    def validation_data(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        return self.x, self.y

    def evaluate(self, params: Mapping[str, npt.NDArray[Any]] | None = None) -> EvalResult:
        p = self.predict_proba(self.x, params)
        acc = float((p.argmax(axis=1) == self.y).mean())
        return EvalResult(
            loss=float(-np.log(p[np.arange(N_VAL), self.y] + 1e-12).mean()), accuracy=acc, samples=N_VAL
        )


def make_peer(tmp_path: Path, trained: list[float], **rollout: Any) -> Peer:
    config = PeerConfig(
        network_id="digits",
        status_interval_s=0,
        state_dir=tmp_path,
        min_neighbours=0,
        scoring_enabled=False,
        join_on_start=False,
        rollout=RolloutConfig(**rollout),
    )
    net = MemoryNetwork()
    return Peer(
        config,
        QualityLearner(trained),
        Identity(b"\x02" * 32),
        transport=lambda i: net.open(network_id="digits", seed=i.seed),
    )


def rollout_events(tmp_path: Path) -> list[tuple[str, int]]:
    return [(r.event, r.seq) for r in read_log(tmp_path) if r.event.startswith("rollout_")]


async def test_a_worse_candidate_is_never_promoted_and_every_demotion_is_signed(tmp_path: Path) -> None:
    """Version 1 is good; every later one is poisoned (w = 0.2: near chance). None is ever served."""
    peer = make_peer(tmp_path, [0.9] + [0.2] * 11, enabled=True, shadow_rounds=1, promote_after=1)
    async with peer:
        for _ in range(12):
            await peer.step()
            served = peer.rollout.serving()
            assert served is not None and served.seq == 1
            assert served.params["w"][0] == pytest.approx(0.9)
        snap = peer.quality_snapshot()
        assert snap["serving_seq"] == 1 and snap["delta_auc"] < -0.1 and snap["delta_f1"] < -0.1
        assert peer.status()["quality"]["delta_auc"] == snap["delta_auc"]
    events = rollout_events(tmp_path)
    assert [e for e in events if e[0] == PROMOTE] == [(PROMOTE, 1)]
    assert sum(1 for e in events if e[0] == DEMOTE) == 11
    report = verify_log(tmp_path)
    assert report.ok and report.records == 12 + len(events)
    assert cli_main(["audit", "verify", str(tmp_path)]) == 0
    versions = [r for r in read_log(tmp_path) if r.event == "version"]
    assert versions[1].metrics["delta_auc"] < 0 and versions[1].metrics["base_seq"] == 1


async def test_a_better_candidate_is_promoted_after_shadow_and_k_canary_rounds(tmp_path: Path) -> None:
    peer = make_peer(
        tmp_path,
        [0.3, 0.9, 0.9, 0.9, 0.9, 0.9],
        enabled=True,
        shadow_rounds=2,
        promote_after=2,
        canary_fraction=0.5,
    )
    async with peer:
        served = []
        routed: set[str] = set()
        for _ in range(6):
            await peer.step()
            served.append(peer.rollout.serving().seq)  # type: ignore[union-attr]
            if peer.rollout.status()["phase"] == "canary":
                roles = {peer.rollout.model_for(f"user-{i}").role for i in range(50)}  # type: ignore[union-attr]
                routed |= roles
                assert peer.rollout.model_for("user-1") == peer.rollout.model_for("user-1")
    # v1 served at round 1; v2 shadow in rounds 2-3, canary in 4-5, promoted at the end of round 5
    assert served == [1, 1, 1, 1, 2, 2]
    assert routed == {"serving", "canary"}
    events = rollout_events(tmp_path)
    assert events[:5] == [
        ("rollout_promote", 1),
        ("rollout_shadow", 2),
        ("rollout_canary", 2),
        ("rollout_promote", 2),
        ("rollout_shadow", 6),
    ]
    assert verify_log(tmp_path).ok and cli_main(["audit", "verify", str(tmp_path)]) == 0
    promote = next(r for r in read_log(tmp_path) if r.event == "rollout_promote" and r.seq == 2)
    assert promote.metrics["delta_auc"] > 0 and promote.metrics["delta_f1"] > 0


async def test_restart_serves_what_the_log_says_and_manual_rollback_and_promote(tmp_path: Path) -> None:
    cfg = {"enabled": True, "shadow_rounds": 0, "promote_after": 2}
    async with make_peer(tmp_path, [0.3, 0.9, 0.9], **cfg) as peer:
        for _ in range(3):
            await peer.step()
        assert peer.rollout.serving().seq == 2  # type: ignore[union-attr]
    key = tmp_path.parent / "peer.key"
    save_key(Identity(b"\x02" * 32), key)
    # while the peer runs the state dir is locked: a manual rollback is refused in one line
    async with make_peer(tmp_path, [], **cfg) as peer:
        assert peer.rollout.serving().seq == 2  # type: ignore[union-attr]
        assert cli_main(["versions", "rollback", str(tmp_path), "--key", str(key)]) == 1
    assert (
        cli_main(["versions", "rollback", str(tmp_path), "--key", str(key), "--reason", "bad feedback"]) == 0
    )
    async with make_peer(tmp_path, [], **cfg) as peer:
        served = peer.rollout.serving()
        assert served is not None and served.seq == 1 and served.params["w"][0] == pytest.approx(0.3)
    assert cli_main(["versions", "promote", str(tmp_path), "2", "--key", str(key)]) == 0
    assert cli_main(["versions", "promote", str(tmp_path), "2", "--key", str(key)]) == 1  # already serving
    assert cli_main(["versions", "promote", str(tmp_path), "99", "--key", str(key)]) == 1
    async with make_peer(tmp_path, [], **cfg) as peer:
        assert peer.rollout.serving().seq == 2  # type: ignore[union-attr]
    assert cli_main(["audit", "verify", str(tmp_path)]) == 0
    assert cli_main(["versions", "list", str(tmp_path)]) == 0
    assert cli_main(["versions", "show", str(tmp_path), "2", "--json"]) == 0
    manual = [r for r in read_log(tmp_path) if r.reason.startswith("manual:")]
    assert [(r.event, r.seq) for r in manual] == [("rollout_rollback", 1), ("rollout_promote", 2)]


async def test_feedback_with_wrong_shapes_or_labels_is_rejected_clearly(tmp_path: Path) -> None:
    async with make_peer(tmp_path, [0.5], enabled=True) as peer:
        ok = np.zeros((3, 2), np.float32)
        assert peer.rollout.submit_feedback(ok, np.array([0, 1, 1])) == 3
        cases = [
            (np.zeros((3, 5)), np.array([0, 1, 1]), "expected ('n', 2)"),
            (np.zeros(2), np.array([0]), "shape (2,)"),
            (ok, np.array([0, 1]), "one label per row"),
            (ok, np.array([0, 1, 2]), "label 2 is out of range: the model has 2 classes"),
            (ok, np.array([0, -1, 1]), "out of range"),
            (ok, np.array([0.0, 1.0, 1.0]), "integer class indices"),
            (np.full((3, 2), np.nan), np.array([0, 1, 1]), "non-finite"),
            ([["a", "b"]], np.array([0]), "not a numeric array"),
            (np.zeros((0, 2)), np.zeros(0, np.int64), "empty"),
        ]
        for x, y, message in cases:
            with pytest.raises(FeedbackError, match=message.replace("(", r"\(").replace(")", r"\)")):
                peer.rollout.submit_feedback(x, y)
        assert len(peer.rollout.feedback) == 3  # nothing refused was kept


async def test_rollout_off_serves_the_newest_version_and_records_deltas_to_the_previous(
    tmp_path: Path,
) -> None:
    async with make_peer(tmp_path, [0.3, 0.9, 0.2]) as peer:
        for _ in range(3):
            await peer.step()
            assert peer.rollout.serving().seq == peer.engine.seq  # type: ignore[union-attr]
    versions = [r for r in read_log(tmp_path) if r.event == "version"]
    assert "delta_auc" not in versions[0].metrics
    assert versions[1].metrics["delta_auc"] > 0 and versions[2].metrics["delta_auc"] < 0
    assert all({"val_auc", "val_f1", "val_accuracy", "val_loss"} <= set(v.metrics) for v in versions)
    assert rollout_events(tmp_path) == []


def test_the_embedding_handle_serves_and_refuses_bad_feedback_in_the_callers_thread(tmp_path: Path) -> None:
    from p2pfl.peer import PeerHandle

    net = MemoryNetwork()
    config = PeerConfig(
        network_id="digits",
        status_interval_s=0,
        state_dir=tmp_path,
        min_neighbours=0,
        scoring_enabled=False,
        join_on_start=False,
        rollout=RolloutConfig(enabled=True),
    )
    learner = QualityLearner([0.3, 0.9])
    transport = lambda i: net.open(network_id="digits", seed=i.seed)  # noqa: E731
    with PeerHandle.start(config, learner, Identity(b"\x03" * 32), rounds=2, transport=transport) as handle:
        for _ in range(100):
            if handle.status()["round"] >= 2:
                break
            handle.wait(0.05)
        served = handle.model_for("user-1")
        assert served is not None and served.seq == 1 and served.role == "serving"
        assert handle.submit_feedback(np.zeros((2, 2)), np.array([1, 0])) == 2
        with pytest.raises(FeedbackError, match="out of range"):
            handle.submit_feedback(np.zeros((1, 2)), np.array([5]))
        assert "val_auc" in handle.quality_snapshot()


def test_versions_cli_reads_a_log_written_before_quality_metrics(tmp_path: Path, capsys: Any) -> None:
    from p2pfl.state import VersionLog

    log = VersionLog(tmp_path, Identity(b"\x04" * 32))
    for seq in (1, 2):
        log.append(event="version", seq=seq, round=seq, digest=bytes(32), metrics={"val_accuracy": 0.5})
    assert cli_main(["versions", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "0.5000" in out and "serving None" in out
    assert cli_main(["versions", "show", str(tmp_path), "2"]) == 0
    assert cli_main(["versions", "show", str(tmp_path), "3"]) == 1
    assert cli_main(["versions", "list", str(tmp_path / "missing")]) == 1
    key = tmp_path.parent / "other.key"
    save_key(Identity(b"\x05" * 32), key)
    capsys.readouterr()
    assert cli_main(["versions", "promote", str(tmp_path), "1", "--key", str(key)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the key is peer" in err


async def test_feedback_that_shows_a_promoted_version_worse_rolls_serving_back(tmp_path: Path) -> None:
    cfg = {"enabled": True, "shadow_rounds": 0, "promote_after": 2}
    async with make_peer(tmp_path, [0.3, 0.9, 0.9, 0.9], **cfg) as peer:
        for _ in range(3):
            await peer.step()
        assert peer.rollout.serving().seq == 2  # type: ignore[union-attr]
        # the host's traffic disagrees with the validation split: labels are the opposite of feature 0
        rng = np.random.default_rng(1)
        z = rng.integers(0, 2, 2000)
        x = np.stack([z.astype(np.float32), rng.random(2000).astype(np.float32)], axis=1)
        peer.rollout.submit_feedback(x, 1 - z)
        await peer.step()
        assert peer.rollout.serving().seq == 1  # type: ignore[union-attr]
    last = [r for r in read_log(tmp_path) if r.event == "rollout_rollback"]
    assert [(r.seq, r.reason.startswith("serving seq 2 dropped")) for r in last] == [(1, True)]
    assert verify_log(tmp_path).ok


async def test_a_poisoned_mix_that_slips_past_scoring_is_never_served(tmp_path: Path) -> None:
    """Scoring off (so nothing stops it): from round 2 on a neighbour replica far from the honest models is
    mixed in every round. Each mixed version is worse than the served one and is demoted; the host keeps
    getting version 1."""
    config = PeerConfig(
        network_id="digits",
        status_interval_s=0,
        state_dir=tmp_path,
        min_neighbours=0,
        scoring_enabled=False,
        join_on_start=False,
        mix_scope="all",
        rollout=RolloutConfig(enabled=True, shadow_rounds=1, promote_after=1),
    )
    net = MemoryNetwork()
    peer = Peer(
        config,
        QualityLearner([0.8] * 10),
        Identity(b"\x06" * 32),
        transport=lambda i: net.open(network_id="digits", seed=i.seed),
    )
    async with peer:
        await peer.step()
        for version in range(2, 11):
            vec = np.full(peer.engine.layout.size, -3.0, np.float32)
            peer.engine.replicas["mallory"] = Replica(
                "mallory", vec, version, peer.engine.layout.digest(vec), trio.current_time()
            )
            await peer.step()
            assert peer.rollout.serving().seq == 1  # type: ignore[union-attr]
            assert peer.quality_snapshot()["delta_auc"] < 0
    events = rollout_events(tmp_path)
    assert [e for e in events if e[0] == PROMOTE] == [(PROMOTE, 1)]
    assert {e[0] for e in events} == {PROMOTE, "rollout_shadow", DEMOTE}
    assert cli_main(["audit", "verify", str(tmp_path)]) == 0


def test_status_and_quality_snapshot_do_not_wait_for_an_evaluation_in_progress(tmp_path: Path) -> None:
    """The peer's trio loop reads them (status.json, the metrics snapshot) while the worker thread may hold
    the rollout's lock for a whole evaluation: they must answer without the lock."""
    import threading

    peer = make_peer(tmp_path, [0.5], enabled=True)
    held, release = threading.Event(), threading.Event()

    def evaluate() -> None:
        with peer.rollout._lock:  # as after_round does while it evaluates
            held.set()
            release.wait(30)

    worker = threading.Thread(target=evaluate)
    worker.start()
    try:
        assert held.wait(10)
        answers: list[object] = []
        reader = threading.Thread(
            target=lambda: answers.extend([peer.rollout.status(), peer.quality_snapshot()]), daemon=True
        )
        reader.start()
        reader.join(10)
        assert len(answers) == 2, "status() / quality_snapshot() blocked on the rollout's lock"
        assert answers[0]["promotions"] == 0  # type: ignore[index]
    finally:
        release.set()
        worker.join(10)
