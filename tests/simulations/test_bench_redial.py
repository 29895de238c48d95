"""simulations.bench_redial: its scenarios and its table (the runs themselves are the benchmark's)."""

from __future__ import annotations

from simulations import bench_redial


def test_every_variant_builds_a_valid_scenario_with_what_its_label_says() -> None:
    for variant in bench_redial.VARIANTS:
        label, every, cooldown, redial, scope = variant
        sc = bench_redial.scenario("signflip", 1, 10, variant, scoring=False)
        assert sc.run.rotate_every == every and ("rotation" in label) == (every > 0)
        assert sc.attack.redial == redial and (redial == "off") == ("+" not in label)
        assert (sc.run.rotate_cooldown == 0) == (cooldown == 0) == ("rest 0" in label)
        assert sc.run.mix_scope == scope and (scope == "chosen") == ("chosen" in label)
        assert not sc.scoring.enabled


def test_the_table_gives_ratios_against_the_rotation_row_of_the_same_kind_and_seed() -> None:
    def row(seed: int, variant: str, share: float, exposed: float) -> dict[str, object]:
        return {"kind": "k", "seed": seed, "variant": variant, "acc_mean": 0.9, "acc_min": 0.8,
                "share": share, "exposed": exposed, "mix": share / 2}  # fmt: skip

    rows = [row(1, "rotation", 0.25, 0.2), row(1, "rotation+all", 0.5, 0.1), row(2, "rotation", 0.5, 0.0)]
    lines = bench_redial.table(rows).splitlines()
    assert lines[3] == "| k | 1 | rotation+all | 90.0 / 80.0 | 0.500 | 2.00 | 0.100 | 0.50 | 0.250 | 2.00 |"
    assert lines[4].endswith("| 0.500 | 1.00 | 0.000 | - | 0.250 | 1.00 |")  # no ratio against 0
