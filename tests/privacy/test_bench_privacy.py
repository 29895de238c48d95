"""benchmarks/bench_privacy.py: the DP rows get their own hyper-parameters, the no-DP row keeps its own."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import bench_privacy

from p2pfl.sim.scenario import parse_scenario


def _args(**over: object) -> argparse.Namespace:
    base = {
        "dataset": "synthetic_hard",
        "samples": 2000,
        "partition": "iid",
        "rounds": 5,
        "hidden": 32,
        "momentum": 0.9,
        "local_steps": 10,
        "batch_size": 16,
        "lr": 0.1,
        "lr_decay": 1.0,
        "dp_local_steps": None,
        "dp_batch_size": None,
        "dp_lr": None,
        "dp_lr_decay": None,
        "clip": 0.5,
        "dp_at": {},
        "seed": 3,
        "accountant": "rdp",
    }
    return argparse.Namespace(**(base | over))


def test_dp_rows_use_the_dp_hyper_parameters_and_the_reference_its_own() -> None:
    args = _args(dp_batch_size=256, dp_lr=1.0, dp_local_steps=40)
    ref = parse_scenario(bench_privacy.scenario(args, math.inf))
    dp = parse_scenario(bench_privacy.scenario(args, 3.0))
    assert (ref.model.batch_size, ref.model.lr, ref.model.local_steps) == (16, 0.1, 10)
    assert not ref.privacy.config().enabled
    assert (dp.model.batch_size, dp.model.lr, dp.model.local_steps) == (256, 1.0, 40)
    cfg = dp.privacy.config()
    assert (cfg.mode, cfg.epsilon, cfg.delta, cfg.clip_norm) == ("record", 3.0, 1e-5, 0.5)
    assert dp.data.dataset == "synthetic_hard"


def test_dp_rows_default_to_the_shared_hyper_parameters() -> None:
    dp = parse_scenario(bench_privacy.scenario(_args(), 8.0))
    assert (dp.model.batch_size, dp.model.lr, dp.model.local_steps) == (16, 0.1, 10)
    assert bench_privacy.noise_multiplier(_args(), math.inf, 1000) is None


def test_a_row_of_its_own_overrides_the_dp_setting() -> None:
    eps, setting = bench_privacy.dp_at("8=16/0.1/1.0/10")
    args = _args(dp_batch_size=32, dp_lr=0.3, dp_local_steps=3, dp_at={eps: setting})
    eight = parse_scenario(bench_privacy.scenario(args, 8.0))
    three = parse_scenario(bench_privacy.scenario(args, 3.0))
    assert (eight.model.batch_size, eight.model.lr, eight.model.local_steps) == (16, 0.1, 10)
    assert eight.privacy.config().clip_norm == 1.0
    assert (three.model.batch_size, three.model.lr, three.model.local_steps) == (32, 0.3, 3)
    assert three.privacy.config().clip_norm == 0.5
    with pytest.raises(argparse.ArgumentTypeError, match="EPS=BATCH/LR/CLIP/STEPS"):
        bench_privacy.dp_at("8=16/0.1")


def test_the_chosen_accountant_reaches_the_peers_and_calibrates_their_noise() -> None:
    rdp, pld = _args(), _args(accountant="pld")
    assert parse_scenario(bench_privacy.scenario(pld, 3.0)).privacy.config().accountant == "pld"
    assert parse_scenario(bench_privacy.scenario(rdp, 3.0)).privacy.config().accountant == "rdp"
    sigma_rdp = bench_privacy.noise_multiplier(rdp, 3.0, 1000)
    sigma_pld = bench_privacy.noise_multiplier(pld, 3.0, 1000)
    assert sigma_rdp is not None and sigma_pld is not None and sigma_pld < sigma_rdp
