"""The package layout: every p2pfl subpackage is installed, bootstrap/ and simulations/ only under p2pfl."""

from __future__ import annotations

import runpy
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _layout() -> tuple[list[str], dict[str, str]]:
    ns = runpy.run_path(str(ROOT / "setup.py"), run_name="setup_layout")  # not __main__: setup() is not run
    return list(ns["PACKAGES"]), dict(ns["PACKAGE_DIR"])


def test_every_package_under_p2pfl_is_installed() -> None:
    packages, _ = _layout()
    on_disk = {
        ".".join(d.relative_to(ROOT).parts)
        for d in (ROOT / "p2pfl").rglob("*")
        if d.is_dir() and (d / "__init__.py").is_file() and "__pycache__" not in d.parts
    } | {"p2pfl"}
    assert on_disk - set(packages) == set()


def test_bootstrap_and_simulations_install_under_p2pfl_only() -> None:
    packages, package_dir = _layout()
    assert package_dir == {"p2pfl.bootstrap": "bootstrap", "p2pfl.sim": "simulations"}
    assert {"p2pfl.bootstrap", "p2pfl.sim"} <= set(packages)
    assert {p.split(".")[0] for p in packages} == {"p2pfl"}


def test_p2pfl_sim_resolves_to_this_checkout() -> None:
    import p2pfl.bootstrap
    import p2pfl.sim

    assert Path(p2pfl.sim.__file__).resolve().parent == ROOT / "simulations"
    assert Path(p2pfl.bootstrap.__file__).resolve().parent == ROOT / "bootstrap"


@pytest.mark.slow
def test_wheel_has_no_top_level_bootstrap_or_simulations(tmp_path: Path) -> None:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT, src, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info", "build")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(src),
            "-w",
            str(tmp_path / "whl"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "whl").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"p2pfl"}
    assert "p2pfl/sim/scenarios/default.toml" in names
    assert "p2pfl/bootstrap/__main__.py" in names
    assert any(n.endswith("entry_points.txt") for n in names)
    entry_points = next(zipfile.ZipFile(wheel).read(n) for n in names if n.endswith("entry_points.txt"))
    assert b"p2pfl-bootstrap = p2pfl.bootstrap.__main__:main" in entry_points
